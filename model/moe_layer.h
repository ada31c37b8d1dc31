// The MoE layer of MODEL.md: router → permutation of the (token, choice) assignments by expert →
// grouped SwiGLU expert GEMMs → combine with the gate weights, plus the optional shared expert.
// Dropless by default; with a capacity factor the router's keep-mask removes assignments before
// the permutation, so dropped assignments cost nothing and contribute 0.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/mlp.h"
#include "model/model_config.h"
#include "model/parameter.h"
#include "model/router.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

struct MoeStash {
  RouterStash router;
  MlpStash shared;
  int64_t rows = 0;              // R kept assignments
  std::vector<int64_t> counts;   // (E) kept rows per expert
  std::vector<int64_t> offsets;  // (E+1) row offsets of each expert
  std::vector<int32_t> perm;     // (R) source assignment t·k+j of each permuted row
  Tensor xp;                     // (R,H) permuted inputs
  Tensor gate, up;               // (R,F); hold their gradients after backward_dx
  Tensor act;                    // (R,F) silu(gate)·up
  Tensor y;                      // (R,H) expert outputs
  Tensor dy;                     // (R,H) d loss / d y
  Tensor dact;                   // (R,F)
  Tensor dxp;                    // (R,H)
  Tensor dgates;                 // (N,k)
  double aux_scale = 1.0;        // weight of this micro-batch's balance + z losses
};

class MoeLayer {
 public:
  MoeLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
           ParameterRegistry& registry);

  // y (N,H) = (accumulate ? y : 0) + moe(x). aux_scale weights the router losses in backward.
  void forward(const Tensor& x_NH, int64_t batch, int64_t seq, double aux_scale, Tensor& y_NH,
               bool accumulate, MoeStash& stash) const;
  // dx (N,H) = d loss / d x, overwritten. dy must stay unchanged until backward_dw.
  void backward_dx(const Tensor& dy_NH, Tensor& dx_NH, MoeStash& stash) const;
  void backward_dw(MoeStash& stash) const;

  const Router& router() const { return router_; }
  bool has_shared_expert() const { return shared_ != nullptr; }
  // Parameters one token touches: router, k experts, shared expert.
  int64_t active_parameter_count() const;

 private:
  const ParallelContext& ctx_;
  int64_t hidden_, experts_, topk_, ffn_;
  Router router_;
  Parameter* w_gate_;  // [E, F, H]
  Parameter* w_up_;    // [E, F, H]
  Parameter* w_down_;  // [E, H, F]
  std::unique_ptr<Mlp> shared_;
};

}  // namespace moefold
