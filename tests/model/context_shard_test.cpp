// Load-balanced context sharding (model/context_shard.h): hand-worked chunk layouts, a partition
// of every position, equal causal work per rank, and the micro-batch shard.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "model/context_shard.h"
#include "parallel/context.h"

namespace moefold {
namespace {

TEST(ContextShard, HandWorkedPositions) {
  // S = 8, CP = 2: chunks of 2; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  EXPECT_EQ(context_shard_positions(8, 0, 2), (std::vector<int32_t>{0, 1, 6, 7}));
  EXPECT_EQ(context_shard_positions(8, 1, 2), (std::vector<int32_t>{2, 3, 4, 5}));
  EXPECT_EQ(context_shard_positions(8, 3, 4), (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(context_shard_positions(3, 0, 1), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(context_token_positions(2, 8, 1, 2), (std::vector<int32_t>{2, 3, 4, 5, 2, 3, 4, 5}));
}

TEST(ContextShard, PartitionsTheSequenceWithEqualCausalWork) {
  for (int cp : {1, 2, 3, 4, 8}) {
    const int64_t S = 2 * cp * 5;
    std::vector<int> seen(S, 0);
    std::vector<int64_t> work;  // visible (query, key) pairs of each rank's queries
    for (int r = 0; r < cp; ++r) {
      int64_t pairs = 0;
      for (int32_t p : context_shard_positions(S, r, cp)) {
        ++seen[p];
        pairs += p + 1;
      }
      work.push_back(pairs);
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; })) << cp;
    EXPECT_TRUE(std::all_of(work.begin(), work.end(), [&](int64_t w) { return w == work[0]; }))
        << cp;
  }
}

TEST(ContextShard, ShardsTheMicroBatch) {
  TokenBatch full;
  full.batch = 2;
  full.seq = 8;
  for (int t = 0; t < 16; ++t) {
    full.tokens.push_back(100 + t);
    full.labels.push_back(200 + t);
    full.loss_mask.push_back(t % 3 == 0 ? 0.0f : 1.0f);
  }
  const TokenBatch shard = shard_micro_batch(full, 0, 2);
  EXPECT_EQ(shard.batch, 2);
  EXPECT_EQ(shard.seq, 4);
  EXPECT_EQ(shard.tokens, (std::vector<int32_t>{100, 101, 106, 107, 108, 109, 114, 115}));
  EXPECT_EQ(shard.labels, (std::vector<int32_t>{200, 201, 206, 207, 208, 209, 214, 215}));
  EXPECT_EQ(shard.loss_mask, (std::vector<float>{0, 1, 0, 1, 1, 0, 1, 0}));
}

TEST(ContextShard, ValidateNamesTheSetting) {
  ParallelContext ctx = ParallelContext::single_process();
  ctx.coords.cp_size = 2;
  ModelConfig c;
  c.num_layers = 2;
  c.seq_length = 12;
  c.moe.num_experts = 4;
  c.moe.moe_layer_pattern = {0, 1};
  EXPECT_TRUE(validate_context_parallel(c, ctx).ok());
  c.seq_length = 10;
  EXPECT_EQ(validate_context_parallel(c, ctx).message(),
            "seq_length 10 is not divisible by 2·context_parallel_size = 4");
  // The MoE layer takes non-contiguous CP shards: capacity and per-sequence losses compose.
  c.seq_length = 12;
  c.moe.moe_expert_capacity_factor = 1.5f;
  c.moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  EXPECT_TRUE(validate_context_parallel(c, ctx).ok());
}

}  // namespace
}  // namespace moefold
