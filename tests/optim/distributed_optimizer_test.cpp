#include "optim/distributed_optimizer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "parallel/grad_buckets.h"

namespace moefold {
namespace {

OptimizerConfig config() {
  OptimizerConfig c;
  c.adam_beta1 = 0.9f;
  c.adam_beta2 = 0.95f;
  c.adam_eps = 1e-8f;
  c.weight_decay = 0.1f;
  return c;
}

// DP = 3 simulated in one process: each "rank" holds the full flat parameter buffer, the reduced
// gradients of its owned slices and a DistributedOptimizer over them. After every step the owned
// elements of all ranks, put together, equal one plain AdamW step over the whole parameters, bit
// for bit, with each parameter's weight-decay flag.
TEST(DistributedOptimizer, OwnedSlicesOfAllRanksEqualPlainAdamW) {
  constexpr int kRanks = 3;
  const std::vector<int64_t> numels = {7, 5, 11, 1};
  const std::vector<bool> decay = {true, false, true, false};
  const int P = static_cast<int>(numels.size());
  std::vector<BucketEntry> entries;  // backward order
  for (int i = P - 1; i >= 0; --i) entries.push_back({i, numels[i]});
  const BucketLayout layout = plan_buckets(entries, 6, kRanks);
  ASSERT_GT(layout.buckets.size(), 1u);

  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Tensor> params, grads;
  std::vector<OptimTensor> plain_tensors;
  for (int i = 0; i < P; ++i) {
    params.push_back(Tensor::empty({numels[i]}));
    grads.push_back(Tensor::empty({numels[i]}));
    for (int64_t j = 0; j < numels[i]; ++j) params[i].data()[j] = normal(rng);
    plain_tensors.push_back({"p" + std::to_string(i), params[i].clone(), grads[i], decay[i]});
  }
  AdamW plain(config(), plain_tensors);

  std::vector<Tensor> rank_params, rank_shards;  // (total_numel), (shard_numel) per rank
  std::vector<std::unique_ptr<DistributedOptimizer>> ranks;
  for (int r = 0; r < kRanks; ++r) {
    rank_params.push_back(Tensor::zeros({layout.total_numel}));
    rank_shards.push_back(Tensor::zeros({layout.shard_numel()}));
    for (int e = 0; e < P; ++e) {
      std::memcpy(rank_params[r].data() + layout.entry_offset[e],
                  params[layout.entries[e].id].data(), numels[layout.entries[e].id] * 4);
    }
    std::vector<ShardSegment> segments;
    for (const OwnedSegment& o : owned_segments(layout, r)) {
      const int id = layout.entries[o.entry].id;
      segments.push_back({id, o.entry_offset,
                          rank_params[r].slice_rows(o.buffer_offset, o.buffer_offset + o.numel),
                          rank_shards[r].slice_rows(o.shard_offset, o.shard_offset + o.numel),
                          decay[id], "p" + std::to_string(id)});
    }
    ranks.push_back(std::make_unique<DistributedOptimizer>(config(), std::move(segments)));
  }

  for (int step = 0; step < 4; ++step) {
    for (int i = 0; i < P; ++i)
      for (int64_t j = 0; j < numels[i]; ++j) grads[i].data()[j] = normal(rng);
    for (int r = 0; r < kRanks; ++r) {  // what the reduce-scatter delivers
      for (const ShardSegment& s : ranks[r]->segments()) {
        std::memcpy(s.grad.data(), grads[s.param_index].data() + s.param_offset,
                    s.grad.numel() * 4);
      }
      ranks[r]->step(1e-2 * (step + 1));
    }
    plain.step(1e-2 * (step + 1));
    for (int r = 0; r < kRanks; ++r) {
      for (const ShardSegment& s : ranks[r]->segments()) {
        const float* want = plain.tensors()[s.param_index].param.data() + s.param_offset;
        for (int64_t j = 0; j < s.param.numel(); ++j) {
          EXPECT_EQ(s.param.data()[j], want[j]) << "step " << step << " param " << s.param_index;
        }
      }
    }
  }
  for (const auto& r : ranks) EXPECT_EQ(r->steps(), 4);

  // The moments, gathered at each parameter's shape from every rank, equal plain AdamW's; and
  // loading them back gives each rank its slices.
  std::vector<Tensor> m, v;
  for (int i = 0; i < P; ++i) {
    m.push_back(Tensor::zeros({numels[i]}));
    v.push_back(Tensor::zeros({numels[i]}));
  }
  for (const auto& r : ranks) r->copy_state_to(m, v);
  for (int i = 0; i < P; ++i) {
    EXPECT_EQ(m[i].to_vector(), plain.exp_avg(i).to_vector()) << i;
    EXPECT_EQ(v[i].to_vector(), plain.exp_avg_sq(i).to_vector()) << i;
  }
  DistributedOptimizer fresh(config(), ranks[1]->segments());
  fresh.load_state_from(m, v);
  std::vector<Tensor> m2, v2;
  for (int i = 0; i < P; ++i) {
    m2.push_back(Tensor::zeros({numels[i]}));
    v2.push_back(Tensor::zeros({numels[i]}));
  }
  fresh.copy_state_to(m2, v2);
  for (const ShardSegment& s : fresh.segments()) {
    for (int64_t j = 0; j < s.param.numel(); ++j) {
      const int64_t at = s.param_offset + j;
      EXPECT_EQ(m2[s.param_index].data()[at], m[s.param_index].data()[at]);
      EXPECT_EQ(v2[s.param_index].data()[at], v[s.param_index].data()[at]);
    }
  }
}

// Each rank holds Adam state only for its slices: 1/DP of the elements (plus padding).
TEST(DistributedOptimizer, StateBytesFallAsOneOverDp) {
  const std::vector<BucketEntry> entries = {{2, 1000}, {1, 600}, {0, 400}};
  const int64_t total = 2000;
  for (int dp : {1, 2, 4}) {
    const BucketLayout layout = plan_buckets(entries, 700, dp);
    const Tensor params = Tensor::zeros({layout.total_numel});
    const Tensor shard = Tensor::zeros({layout.shard_numel()});
    for (int r = 0; r < dp; ++r) {
      std::vector<ShardSegment> segments;
      for (const OwnedSegment& o : owned_segments(layout, r)) {
        segments.push_back({layout.entries[o.entry].id, o.entry_offset,
                            params.slice_rows(o.buffer_offset, o.buffer_offset + o.numel),
                            shard.slice_rows(o.shard_offset, o.shard_offset + o.numel), true, "p"});
      }
      const int64_t before = MemoryStats::current_bytes();
      DistributedOptimizer opt(config(), std::move(segments));
      const int64_t measured = MemoryStats::current_bytes() - before;
      EXPECT_EQ(measured, opt.state_bytes());
      EXPECT_LE(opt.state_bytes(), 2 * 4 * (total / dp + 3)) << "dp " << dp << " rank " << r;
      EXPECT_GE(opt.state_bytes(), 2 * 4 * (total / dp - 3)) << "dp " << dp << " rank " << r;
    }
  }
}

}  // namespace
}  // namespace moefold
