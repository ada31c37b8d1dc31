// The output projection and the lm loss: logits = h Wᵀ (W = lm_head, or embed when tied) and
// cross-entropy with loss_mask, fused and chunked over rows so no (N,V) logits buffer is kept;
// the gradient is produced in the same pass.
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

class LmHead {
 public:
  // tied_embedding: the embed table when embeddings are tied, else null (lm_head is created).
  LmHead(const ModelConfig& config, const ParallelContext& ctx, Parameter* tied_embedding,
         ParameterRegistry& registry);

  // Returns Σ CE·mask over the N rows of h (N,H). With grad_scale != 0 and dh non-null:
  // dh (N,H) = grad_scale · d(Σ CE·mask)/dh (overwritten) and dW += the same for W.
  double forward_backward(const Tensor& h_NH, const int32_t* labels_N, const float* mask_N,
                          float grad_scale, Tensor* dh_NH) const;

  Parameter* weight() const { return weight_; }
  bool tied() const { return tied_; }

 private:
  const ParallelContext& ctx_;
  int64_t vocab_, hidden_;
  bool tied_;
  Parameter* weight_;  // [V, H]
};

}  // namespace moefold
