// Token embedding h = embed[tokens] (MODEL.md "/embed", [V, H]); the same table is the output
// projection when embeddings are tied.
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

class Embedding {
 public:
  Embedding(const ModelConfig& config, const ParallelContext& ctx, ParameterRegistry& registry);

  // h (N,H) = embed[tokens (N)], overwritten.
  void forward(const int32_t* tokens_N, int64_t N, Tensor& h_NH) const;
  // d embed[tokens[n]] += dh[n]: the whole backward is a weight gradient.
  void backward_dw(const Tensor& dh_NH, const int32_t* tokens_N, int64_t N) const;

  Parameter* weight() const { return weight_; }

 private:
  const ParallelContext& ctx_;
  int64_t vocab_, hidden_;
  Parameter* weight_;  // [V, H]
};

}  // namespace moefold
