// The SwiGLU MLP of MODEL.md, y = (silu(x Wgᵀ) ⊙ (x Wuᵀ)) Wdᵀ: the dense FFN of dense layers and
// the shared expert of MoE layers. (Routed experts use the grouped form in moe_layer.)
// Tensor parallel (sharding_plan.h): Wg/Wu column-parallel, Wd row-parallel, so each TP rank
// holds F/TP of the hidden units. x and y are in the TpRegion layout: n = N/TP token rows when
// the Mlp is built sequence-parallel, all N rows otherwise.
#pragma once

#include <cstdint>
#include <string>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/tp_communication.h"
#include "tensor/tensor.h"

namespace moefold {

// F below is this rank's F/TP.
struct MlpStash {
  Tensor x;     // (N,H) input of all tokens: the caller's x, or gathered (sequence parallel)
  Tensor gate;  // (N,F) x Wgᵀ; holds d gate after backward_dx
  Tensor up;    // (N,F) x Wuᵀ;  holds d up after backward_dx
  Tensor act;   // (N,F) silu(gate)·up
  Tensor dact;  // (N,F)
  Tensor dy;    // (N,H) the caller's dy, or gathered (sequence parallel), for backward_dw
  Tensor y_full, dx_full;  // (N,H) partial sums over this rank's F/TP units (TP > 1 only)
  Tensor shard;            // (n,H) scratch of the TP exit/entry
};

class Mlp {
 public:
  // prefix: "layers/<l>/mlp/" or "layers/<l>/moe/shared/"; ffn = Fd or Fs (global).
  // sequence_parallel: x and y are token shards (only with TP > 1).
  Mlp(const ModelConfig& config, const ParallelContext& ctx, const std::string& prefix, int ffn,
      ParameterRegistry& registry, bool sequence_parallel = false);

  // y (n,H) = (accumulate ? y : 0) + mlp(x), x (n,H); N = n·TP under sequence parallelism.
  void forward(const Tensor& x_NH, Tensor& y_NH, bool accumulate, MlpStash& stash) const;
  // dx (n,H) = d loss / d x, overwritten or added (accumulate). dy must stay unchanged until
  // backward_dw. With TP the weight gradients are accumulated here, while dx's TP reduction is
  // in flight, and backward_dw has nothing left to do.
  void backward_dx(const Tensor& dy_NH, Tensor& dx_NH, bool accumulate, MlpStash& stash) const;
  void backward_dw(MlpStash& stash) const;  // accumulates dWg, dWu, dWd

  int64_t parameter_count() const { return 3 * hidden_ * ffn_ * region_.size(); }  // global

 private:
  const ParallelContext& ctx_;
  TpRegion region_;
  int64_t hidden_, ffn_;  // ffn_: this rank's F/TP
  Parameter* w_gate_;  // [F, H]
  Parameter* w_up_;    // [F, H]
  Parameter* w_down_;  // [H, F]

  void weight_gradients(MlpStash& stash) const;
};

}  // namespace moefold
