#include "model/embedding.h"

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/embedding.h"

namespace moefold {

Embedding::Embedding(const ModelConfig& config, const ParallelContext& ctx,
                     ParameterRegistry& registry)
    : ctx_(ctx), vocab_(config.padded_vocab_size()), hidden_(config.hidden_size) {
  weight_ = registry.add_weight(shard_layout("embed", {vocab_, hidden_}, ctx.coords),
                                config.init_method_std);
}

void Embedding::forward(const int32_t* tokens_N, int64_t N, Tensor& h_NH) const {
  MOEFOLD_CHECK(h_NH.numel() == N * hidden_);
  cpu::embedding_forward(tokens_N, weight_->value.data(), h_NH.data(), N, vocab_, hidden_);
}

void Embedding::backward_dw(const Tensor& dh_NH, const int32_t* tokens_N, int64_t N) const {
  MOEFOLD_CHECK(dh_NH.numel() == N * hidden_);
  cpu::embedding_backward(dh_NH.data(), tokens_N, weight_->grad.data(), N, vocab_, hidden_);
}

}  // namespace moefold
