#include "model/context_shard.h"

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {

ContextChunks context_chunks(int cp_rank, int cp_size) {
  MOEFOLD_CHECK(cp_size >= 1 && cp_rank >= 0 && cp_rank < cp_size);
  return {cp_rank, 2 * cp_size - 1 - cp_rank};
}

std::vector<int32_t> context_shard_positions(int64_t seq, int cp_rank, int cp_size) {
  std::vector<int32_t> positions;
  if (cp_size == 1) {
    for (int64_t s = 0; s < seq; ++s) positions.push_back(static_cast<int32_t>(s));
    return positions;
  }
  MOEFOLD_CHECK(seq % (2 * cp_size) == 0,
                "seq " << seq << " is not divisible by 2·CP = " << 2 * cp_size);
  const int64_t chunk = seq / (2 * cp_size);
  const ContextChunks chunks = context_chunks(cp_rank, cp_size);
  for (int c : {chunks.first, chunks.second}) {
    for (int64_t s = c * chunk; s < (c + 1) * chunk; ++s) {
      positions.push_back(static_cast<int32_t>(s));
    }
  }
  return positions;
}

std::vector<int32_t> context_token_positions(int64_t batch, int64_t seq, int cp_rank,
                                             int cp_size) {
  const std::vector<int32_t> one = context_shard_positions(seq, cp_rank, cp_size);
  std::vector<int32_t> positions;
  positions.reserve(batch * one.size());
  for (int64_t b = 0; b < batch; ++b) positions.insert(positions.end(), one.begin(), one.end());
  return positions;
}

TokenBatch shard_micro_batch(const TokenBatch& full, int cp_rank, int cp_size) {
  const int64_t B = full.batch, S = full.seq;
  MOEFOLD_CHECK(static_cast<int64_t>(full.tokens.size()) == B * S &&
                full.labels.size() == full.tokens.size() &&
                full.loss_mask.size() == full.tokens.size());
  const std::vector<int32_t> positions = context_shard_positions(S, cp_rank, cp_size);
  TokenBatch shard;
  shard.batch = full.batch;
  shard.seq = static_cast<int>(positions.size());
  for (int64_t b = 0; b < B; ++b) {
    for (int32_t p : positions) {
      shard.tokens.push_back(full.tokens[b * S + p]);
      shard.labels.push_back(full.labels[b * S + p]);
      shard.loss_mask.push_back(full.loss_mask[b * S + p]);
    }
  }
  return shard;
}

absl::Status validate_context_parallel(const ModelConfig& c, const ParallelContext& ctx) {
  const int cp = ctx.coords.cp_size, tp = ctx.coords.tp_size;
  if (cp == 1) return absl::OkStatus();
  const bool sequence_parallel = ctx.config.sequence_parallel && tp > 1;
  const int64_t divisor = 2 * int64_t{cp} * (sequence_parallel ? tp : 1);
  if (c.seq_length % divisor != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seq_length ", c.seq_length, " is not divisible by 2·context_parallel_size",
        sequence_parallel ? "·tensor_model_parallel_size (sequence_parallel)" : "", " = ",
        divisor));
  }
  return absl::OkStatus();
}

}  // namespace moefold
