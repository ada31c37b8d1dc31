// The SwiGLU MLP of MODEL.md, y = (silu(x Wgᵀ) ⊙ (x Wuᵀ)) Wdᵀ: the dense FFN of dense layers and
// the shared expert of MoE layers. (Routed experts use the grouped form in moe_layer.)
#pragma once

#include <cstdint>
#include <string>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

struct MlpStash {
  Tensor x;     // (N,H) input, shared with the caller
  Tensor gate;  // (N,F) x Wgᵀ; holds d gate after backward_dx
  Tensor up;    // (N,F) x Wuᵀ;  holds d up after backward_dx
  Tensor act;   // (N,F) silu(gate)·up
  Tensor dact;  // (N,F)
  Tensor dy;    // (N,H) shared with the caller, for backward_dw
};

class Mlp {
 public:
  // prefix: "layers/<l>/mlp/" or "layers/<l>/moe/shared/"; ffn = Fd or Fs.
  Mlp(const ModelConfig& config, const ParallelContext& ctx, const std::string& prefix, int ffn,
      ParameterRegistry& registry);

  // y (N,H) = (accumulate ? y : 0) + mlp(x).
  void forward(const Tensor& x_NH, Tensor& y_NH, bool accumulate, MlpStash& stash) const;
  // dx (N,H) = d loss / d x, overwritten or added (accumulate). dy must stay unchanged until
  // backward_dw.
  void backward_dx(const Tensor& dy_NH, Tensor& dx_NH, bool accumulate, MlpStash& stash) const;
  void backward_dw(MlpStash& stash) const;  // accumulates dWg, dWu, dWd

  int64_t parameter_count() const { return 3 * hidden_ * ffn_; }

 private:
  const ParallelContext& ctx_;
  int64_t hidden_, ffn_;
  Parameter* w_gate_;  // [F, H]
  Parameter* w_up_;    // [F, H]
  Parameter* w_down_;  // [H, F]
};

}  // namespace moefold
