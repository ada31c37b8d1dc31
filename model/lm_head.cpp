#include "model/lm_head.h"

#include <algorithm>

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/cross_entropy.h"

namespace moefold {

LmHead::LmHead(const ModelConfig& config, const ParallelContext& ctx, Parameter* tied_embedding,
               ParameterRegistry& registry)
    : ctx_(ctx),
      vocab_(config.padded_vocab_size()),
      hidden_(config.hidden_size),
      tied_(tied_embedding != nullptr) {
  weight_ = tied_ ? tied_embedding
                  : registry.add_weight(shard_layout("lm_head", {vocab_, hidden_}, ctx.coords),
                                        config.init_method_std);
}

double LmHead::forward_backward(const Tensor& h_NH, const int32_t* labels_N, const float* mask_N,
                                float grad_scale, Tensor* dh_NH) const {
  const int64_t N = h_NH.numel() / hidden_;
  // Each chunk's GEMMs re-pack the whole (V,H) weight, so chunks must be tall enough for that to
  // be cheap next to the multiply: about 128 MiB of logits, at least 256 rows.
  const int64_t chunk_rows = std::clamp<int64_t>((int64_t{1} << 25) / vocab_, 256, 4096);
  const bool grad = grad_scale != 0.0f && dh_NH != nullptr;
  if (grad) MOEFOLD_CHECK(dh_NH->numel() == N * hidden_);
  double loss_sum = 0.0;
  cpu::cross_entropy_forward_backward(
      h_NH.data(), weight_->value.data(), labels_N, mask_N, grad ? grad_scale : 0.0f, &loss_sum,
      grad ? dh_NH->data() : nullptr, grad ? weight_->grad.data() : nullptr, N, hidden_, vocab_,
      chunk_rows);
  return loss_sum;
}

}  // namespace moefold
