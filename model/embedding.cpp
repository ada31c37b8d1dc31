#include "model/embedding.h"

#include <cstring>

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/embedding.h"

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
  rows_ = weight_->layout.local_shape[0];
}

void Embedding::forward(const int32_t* tokens_N, int64_t N, Tensor& h_nH) const {
  const int64_t H = hidden_;
  MOEFOLD_CHECK(h_nH.numel() == region_.local_rows(N) * H);
  if (!region_.active()) {
    cpu::embedding_forward(tokens_N, weight_->value.data(), h_nH.data(), N, vocab_, H);
    return;
  }
  Tensor partial = region_.sharded() ? Tensor::empty({N, H}) : h_nH.view({N, H});
  const float* table = weight_->value.data();
  float* out = partial.data();
  for (int64_t t = 0; t < N; ++t) {
    const int64_t row = int64_t{tokens_N[t]} - first_row_;
    MOEFOLD_CHECK(tokens_N[t] >= 0 && tokens_N[t] < vocab_,
                  "token id " << tokens_N[t] << " at " << t << " outside vocabulary of " << vocab_);
    if (row >= 0 && row < rows_) {
      std::memcpy(out + t * H, table + row * H, static_cast<size_t>(H) * sizeof(float));
    } else {
      std::memset(out + t * H, 0, static_cast<size_t>(H) * sizeof(float));
    }
  }
  Tensor h = h_nH.view({region_.local_rows(N), H});
  Tensor unused;
  region_.exit_forward(partial, h, false, unused);
}

void Embedding::backward_dw(const Tensor& dh_nH, const int32_t* tokens_N, int64_t N) const {
  const int64_t H = hidden_;
  MOEFOLD_CHECK(dh_nH.numel() == region_.local_rows(N) * H);
  if (!region_.active()) {
    cpu::embedding_backward(dh_nH.data(), tokens_N, weight_->grad.data(), N, vocab_, H);
    return;
  }
  Tensor dh_full;
  region_.exit_backward(dh_nH.view({region_.local_rows(N), H}), N, dh_full);
  float* dtable = weight_->grad.data();
  const float* dh = dh_full.data();
  for (int64_t t = 0; t < N; ++t) {
    const int64_t row = int64_t{tokens_N[t]} - first_row_;
    if (row < 0 || row >= rows_) continue;
    for (int64_t h = 0; h < H; ++h) dtable[row * H + h] += dh[t * H + h];
  }
}

}  // namespace moefold
