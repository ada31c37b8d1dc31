#include "model/embedding.h"

#include <span>

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

Embedding::Embedding(const ModelConfig& config, const ParallelContext& ctx,
                     ParameterRegistry& registry)
    : ctx_(ctx),
      region_{ctx.tp.get(), ctx.config.sequence_parallel},
      vocab_(config.padded_vocab_size()),
      hidden_(config.hidden_size) {
  weight_ = registry.add_weight(shard_layout("embed", {vocab_, hidden_}, ctx.coords),
                                config.init_method_std);
  first_row_ = weight_->layout.local_offset[0];
}

void Embedding::forward(const int32_t* tokens_N, int64_t N, Tensor& h_nH) const {
  const int64_t H = hidden_;
  const std::span<const int32_t> tokens(tokens_N, N);
  MOEFOLD_CHECK(h_nH.numel() == region_.local_rows(N) * H);
  if (!region_.active()) {
    ops::embedding_forward(tokens, weight_->compute_value(), h_nH, vocab_, first_row_);
    return;
  }
  // This rank's vocabulary rows; the TP exit sums the shards' partial lookups.
  Tensor partial =
      region_.sharded() ? Tensor::empty({N, H}, h_nH.dtype()) : h_nH.view({N, H});
  ops::embedding_forward(tokens, weight_->compute_value(), partial, vocab_, first_row_);
  Tensor h = h_nH.view({region_.local_rows(N), H});
  Tensor unused;
  region_.exit_forward(partial, h, false, unused);
}

void Embedding::backward_dw(const Tensor& dh_nH, const int32_t* tokens_N, int64_t N) const {
  const int64_t H = hidden_;
  const std::span<const int32_t> tokens(tokens_N, N);
  MOEFOLD_CHECK(dh_nH.numel() == region_.local_rows(N) * H);
  if (!region_.active()) {
    ops::embedding_backward(dh_nH, tokens, weight_->grad, vocab_, first_row_);
    return;
  }
  Tensor dh_full;
  region_.exit_backward(dh_nH.view({region_.local_rows(N), H}), N, dh_full);
  ops::embedding_backward(dh_full, tokens, weight_->grad, vocab_, first_row_);
}

}  // namespace moefold
