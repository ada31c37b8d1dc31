#include "parallel/grad_buckets.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>

#include "parallel/self_communicator.h"

namespace moefold {
namespace {

// Entries in backward order with numels 5, 3, 7, 2, 4; buckets of ≥ 8 elements over 4 ranks:
//   bucket 0 = {5, 3}: 8 elements, no padding, offset 0
//   bucket 1 = {7, 2}: 9 elements padded to 12, offset 8
//   bucket 2 = {4}:    4 elements, offset 20; total 24, shards of 2 + 3 + 1 = 6
BucketLayout hand_layout() {
  return plan_buckets({{40, 5}, {30, 3}, {20, 7}, {10, 2}, {0, 4}}, 8, 4);
}

TEST(PlanBuckets, HandWorkedBoundariesAndPadding) {
  const BucketLayout l = hand_layout();
  ASSERT_EQ(l.buckets.size(), 3u);
  EXPECT_EQ(l.buckets[0].entries, (std::vector<int>{0, 1}));
  EXPECT_EQ(l.buckets[1].entries, (std::vector<int>{2, 3}));
  EXPECT_EQ(l.buckets[2].entries, (std::vector<int>{4}));
  EXPECT_EQ(l.buckets[0].offset, 0);
  EXPECT_EQ(l.buckets[1].offset, 8);
  EXPECT_EQ(l.buckets[2].offset, 20);
  EXPECT_EQ(l.buckets[1].numel, 9);
  EXPECT_EQ(l.buckets[1].padded_numel, 12);
  EXPECT_EQ(l.buckets[2].padded_numel, 4);
  EXPECT_EQ(l.total_numel, 24);
  EXPECT_EQ(l.shard_numel(), 6);
  EXPECT_EQ(l.entry_offset, (std::vector<int64_t>{0, 5, 8, 15, 20}));
  EXPECT_EQ(l.entry_bucket, (std::vector<int>{0, 0, 1, 1, 2}));
  EXPECT_EQ(l.entries[0].id, 40);  // the caller's ids are kept, in the order given
  EXPECT_EQ(l.bucket_shard_offset(1), 2);
  EXPECT_EQ(l.bucket_shard_offset(2), 5);
}

TEST(PlanBuckets, LargeParameterGetsItsOwnBucketAndNoPaddingForOneRank) {
  const BucketLayout l = plan_buckets({{1, 20}, {0, 1}}, 8, 1);
  ASSERT_EQ(l.buckets.size(), 2u);
  EXPECT_EQ(l.buckets[0].numel, 20);
  EXPECT_EQ(l.buckets[1].numel, 1);
  EXPECT_EQ(l.total_numel, 21);
  const BucketLayout one = plan_buckets({{2, 3}, {1, 4}, {0, 5}}, 1000, 1);
  ASSERT_EQ(one.buckets.size(), 1u);  // everything fits one bucket
  EXPECT_EQ(one.total_numel, 12);
}

TEST(OwnedSegments, HandWorkedRankOne) {
  const std::vector<OwnedSegment> s = owned_segments(hand_layout(), 1);
  // Rank 1 owns [2,4) of bucket 0, [11,14) of bucket 1, [21,22) of bucket 2.
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].entry, 0);
  EXPECT_EQ(s[0].entry_offset, 2);
  EXPECT_EQ(s[0].buffer_offset, 2);
  EXPECT_EQ(s[0].shard_offset, 0);
  EXPECT_EQ(s[0].numel, 2);
  EXPECT_EQ(s[1].entry, 2);
  EXPECT_EQ(s[1].entry_offset, 3);
  EXPECT_EQ(s[1].buffer_offset, 11);
  EXPECT_EQ(s[1].shard_offset, 2);
  EXPECT_EQ(s[1].numel, 3);
  EXPECT_EQ(s[2].entry, 4);
  EXPECT_EQ(s[2].entry_offset, 1);
  EXPECT_EQ(s[2].buffer_offset, 21);
  EXPECT_EQ(s[2].shard_offset, 5);
  EXPECT_EQ(s[2].numel, 1);
  // Rank 3 owns only padding of bucket 1 ([17,20)) besides its slices of buckets 0 and 2.
  for (const OwnedSegment& seg : owned_segments(hand_layout(), 3)) EXPECT_NE(seg.entry, 2);
}

TEST(OwnedSegments, EveryElementOwnedOnceOverAnyGroup) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    const int group = 1 + static_cast<int>(rng() % 8);
    std::vector<BucketEntry> entries;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) entries.push_back({i, 1 + static_cast<int64_t>(rng() % 40)});
    const BucketLayout l = plan_buckets(entries, 1 + static_cast<int64_t>(rng() % 60), group);
    std::vector<std::vector<int>> owners(n);
    for (int e = 0; e < n; ++e) owners[e].assign(entries[e].numel, 0);
    std::vector<int> shard_hits(l.shard_numel(), 0);
    for (int r = 0; r < group; ++r) {
      std::fill(shard_hits.begin(), shard_hits.end(), 0);
      for (const OwnedSegment& s : owned_segments(l, r)) {
        EXPECT_EQ(s.buffer_offset, l.entry_offset[s.entry] + s.entry_offset);
        const int b = l.entry_bucket[s.entry];
        EXPECT_EQ(s.shard_offset, l.bucket_shard_offset(b) + s.buffer_offset - l.buckets[b].offset -
                                      r * l.bucket_shard_numel(b));
        for (int64_t j = 0; j < s.numel; ++j) {
          ++owners[s.entry][s.entry_offset + j];
          ++shard_hits[s.shard_offset + j];
        }
      }
      for (int h : shard_hits) EXPECT_LE(h, 1);
    }
    for (int e = 0; e < n; ++e)
      for (int c : owners[e]) EXPECT_EQ(c, 1) << "trial " << trial << " entry " << e;
    for (const GradBucket& b : l.buckets) {
      EXPECT_EQ(b.padded_numel % group, 0);
      EXPECT_LT(b.padded_numel - b.numel, group);
    }
  }
}

// One rank: the reduction is the identity; the bucket launches when its last entry is ready,
// and the reduce-scatter / all-gather round trip copies the buffers.
TEST(GradBucketSet, SingleRankReduceScatterAndGather) {
  auto self = std::make_shared<SelfCommunicator>();
  GradBucketSet set(plan_buckets({{1, 3}, {0, 2}}, 2, 1), self, true);
  ASSERT_EQ(set.layout().buckets.size(), 2u);
  set.zero_grads();
  set.grad_view(0).fill(2.0f);
  set.grad_view(1).fill(3.0f);
  set.mark_ready(0);  // bucket 0 launches now
  set.launch_remaining_grad_reduces();
  set.wait_grad_reduces();
  EXPECT_EQ(set.grad_shard().to_vector(), (std::vector<float>{2, 2, 2, 3, 3}));
  set.param_view(1).fill(7.0f);
  set.launch_param_gathers();
  set.wait_param_gathers();
  EXPECT_FALSE(set.param_gather_pending());
  EXPECT_EQ(set.param_view(1).to_vector(), (std::vector<float>{7, 7}));
  set.zero_grads();
  EXPECT_EQ(set.grad_view(1).to_vector(), (std::vector<float>{0, 0}));
}

}  // namespace
}  // namespace moefold
