// The output projection and the lm loss: logits = h Wᵀ (W = lm_head, or embed when tied) and
// cross-entropy with loss_mask, fused and chunked over rows so no (N,V) logits buffer is kept;
// the gradient is produced in the same pass.
// Vocabulary-parallel with TP > 1: each rank holds V/TP rows of W and computes only its logits;
// the per-row max and Σ exp are reduced over TP and the label's logit comes from the rank that
// owns it, so the full (N,V) logits are never gathered. h enters as a column-parallel input
// (gathered from token shards under sequence parallelism) and dh leaves summed over TP.
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/tp_communication.h"
#include "tensor/tensor.h"

namespace moefold {

class LmHead {
 public:
  // tied_embedding: the embed table when embeddings are tied, else null (lm_head is created).
  LmHead(const ModelConfig& config, const ParallelContext& ctx, Parameter* tied_embedding,
         ParameterRegistry& registry);

  // Adds Σ CE·mask over all N tokens of the micro-batch (the same on every TP rank) to loss_sum,
  // one float64 on h's device (ops::float64_zeros), so the host need not wait for it. h (n,H)
  // is in the residual layout (n = N/TP under sequence parallelism), labels and mask (N) cover
  // all tokens. With grad_scale != 0 and dh non-null: dh (n,H) = grad_scale · d(Σ CE·mask)/dh
  // (overwritten) and dW += the same for this rank's rows of W.
  void forward_backward(const Tensor& h_nH, const int32_t* labels_N, const float* mask_N,
                        float grad_scale, Tensor* dh_nH, const Tensor& loss_sum) const;

  Parameter* weight() const { return weight_; }
  bool tied() const { return tied_; }

 private:
  // The TP > 1 form over this rank's vocabulary rows; h_full (N,H) holds every token.
  void vocab_parallel_forward_backward(const Tensor& h_full, const int32_t* labels_N,
                                       const float* mask_N, float grad_scale,
                                       const Tensor& dh_full,  // undefined: no gradient
                                       const Tensor& loss_sum) const;

  const ParallelContext& ctx_;
  TpRegion region_;
  int64_t vocab_, hidden_;
  bool tied_;
  Parameter* weight_;  // [V, H] local rows
};

}  // namespace moefold
