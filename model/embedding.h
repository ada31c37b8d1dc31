// Token embedding h = embed[tokens] (MODEL.md "/embed", [V, H]); the same table is the output
// projection when embeddings are tied. Vocabulary-parallel: TP rank r holds the rows
// [r·V/TP, (r+1)·V/TP); each rank looks up the tokens it owns (zeros elsewhere) and the partial
// rows are summed over TP: all-reduce, or reduce-scatter to the token shard under sequence
// parallelism (with its all-gather in backward).
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/tp_communication.h"
#include "tensor/tensor.h"

namespace moefold {

class Embedding {
 public:
  Embedding(const ModelConfig& config, const ParallelContext& ctx, ParameterRegistry& registry);

  // h (n,H) = embed[tokens (N)], overwritten; n = N/TP token rows under sequence parallelism
  // (this rank's shard), n = N otherwise.
  void forward(const int32_t* tokens_N, int64_t N, Tensor& h_nH) const;
  // d embed[tokens[t]] += dh[t] for the tokens whose rows this rank holds; dh (n,H) as h. The
  // whole backward is a weight gradient.
  void backward_dw(const Tensor& dh_nH, const int32_t* tokens_N, int64_t N) const;

  Parameter* weight() const { return weight_; }

 private:
  const ParallelContext& ctx_;
  TpRegion region_;
  int64_t vocab_, hidden_;
  int64_t first_row_;  // this rank holds the vocabulary rows from first_row_ on
  Parameter* weight_;         // [V, H] local rows
};

}  // namespace moefold
