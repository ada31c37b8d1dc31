// Load-balanced causal sharding of a micro-batch over the context-parallel (CP) group. The
// sequence (S tokens) is cut into 2·CP chunks of C = S/(2·CP) tokens; CP rank r holds chunks r
// and 2·CP−1−r, in that order, so that every rank has the same amount of causal attention work
// (an early chunk with few visible keys paired with a late one with many). Pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "model/token_batch.h"
#include "model/model_config.h"
#include "parallel/context.h"

namespace moefold {

// The two global chunk indices held by CP rank `cp_rank`: {r, 2·CP−1−r}.
struct ContextChunks {
  int first, second;
};
ContextChunks context_chunks(int cp_rank, int cp_size);

// (S/CP) global positions of the tokens this CP rank holds in each sequence, chunk `first`
// then chunk `second`. CP = 1: 0..S−1. Requires S divisible by 2·CP when CP > 1.
std::vector<int32_t> context_shard_positions(int64_t seq, int cp_rank, int cp_size);

// (B·S/CP) global position of each token of this rank's shard of a (B,S) micro-batch (RoPE):
// context_shard_positions repeated for every sequence. CP = 1: t % S.
std::vector<int32_t> context_token_positions(int64_t batch, int64_t seq, int cp_rank, int cp_size);

// This CP rank's part of `full` (B,S): tokens, labels and loss_mask (B,S/CP) in the order of
// context_shard_positions; seq becomes S/CP. CP = 1 returns a copy.
TokenBatch shard_micro_batch(const TokenBatch& full, int cp_rank, int cp_size);

// The context-parallel limits (part of Model::validate): seq_length divisible by 2·CP (times TP
// with sequence parallelism).
absl::Status validate_context_parallel(const ModelConfig& config, const ParallelContext& ctx);

}  // namespace moefold
