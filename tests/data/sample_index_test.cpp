#include "data/sample_index.h"

#include <gtest/gtest.h>

#include <numeric>

namespace moefold {
namespace {

std::vector<SampleBoundary> boundaries(const std::vector<std::vector<int64_t>>& pairs) {
  std::vector<SampleBoundary> out;
  for (const auto& p : pairs) out.push_back({p[0], p[1]});
  return out;
}

// Goldens printed by numpy 1.24: RandomState(1234).shuffle(arange(10)), then on the same
// generator shuffle(arange(7)); RandomState(42).shuffle(arange(20)).
TEST(NumpyRandomState, ShuffleMatchesNumpy) {
  NumpyRandomState rng(1234);
  std::vector<int64_t> a(10);
  std::iota(a.begin(), a.end(), 0);
  rng.shuffle(std::span<int64_t>(a));
  EXPECT_EQ(a, (std::vector<int64_t>{7, 2, 9, 1, 0, 8, 4, 5, 6, 3}));
  std::vector<int64_t> b(7);
  std::iota(b.begin(), b.end(), 0);
  rng.shuffle(std::span<int64_t>(b));
  EXPECT_EQ(b, (std::vector<int64_t>{6, 4, 0, 5, 3, 2, 1}));

  NumpyRandomState rng42(42);
  std::vector<int64_t> c(20);
  std::iota(c.begin(), c.end(), 0);
  rng42.shuffle(std::span<int64_t>(c));
  EXPECT_EQ(c, (std::vector<int64_t>{0, 17, 15, 1, 8, 5, 11, 3, 18, 16, 13, 2, 9, 19, 4, 12, 7,
                                     10, 14, 6}));
}

// The hand-worked example. Documents [5, 3, 7] in order, seq_length 4: 15 tokens give
// (15 - 1) / 4 = 3 samples of 5 tokens, each starting where the previous one's last token is:
//   sample 0: doc0[0..4]                        → starts (0, 0)
//   sample 1: doc0[4], doc1[0..2], doc2[0]      → starts (0, 4)
//   sample 2: doc2[0..4]                        → starts (2, 0)
//   end of sample 2: its last token is doc2[4]  → (2, 4)
TEST(SampleIndex, HandWorkedExample) {
  const std::vector<int32_t> sizes = {5, 3, 7};
  const std::vector<int64_t> documents = {0, 1, 2};
  const EpochPlan plan = plan_epochs(15, 4, 0);
  EXPECT_EQ(plan.num_epochs, 1);
  EXPECT_EQ(build_document_index(documents, plan, nullptr), documents);
  EXPECT_EQ(build_sample_index(sizes, documents, 4, 1, 15),
            boundaries({{0, 0}, {0, 4}, {2, 0}, {2, 4}}));
}

TEST(SampleIndex, EpochPlan) {
  // 30 tokens per epoch, seq_length 4: 7 samples in one epoch, 14 in two.
  EXPECT_EQ(plan_epochs(30, 4, 7).num_epochs, 1);
  const EpochPlan two = plan_epochs(30, 4, 8);
  EXPECT_EQ(two.num_epochs, 2);
  EXPECT_EQ(two.samples_before_final_epoch, 7);
  EXPECT_TRUE(two.separate_final_epoch);  // 1 sample of the last epoch < 80% of 7
  const EpochPlan mostly = plan_epochs(30, 4, 13);
  EXPECT_EQ(mostly.num_epochs, 2);
  EXPECT_FALSE(mostly.separate_final_epoch);  // 6 samples ≥ int(0.8 · 7) = 5
}

// Goldens from a numpy port of Megatron's gpt_dataset.py/_build_document_sample_shuffle_indices
// and helpers.cpp/build_sample_idx, for sequence sizes [5, 3, 7, 2, 9, 4].
TEST(SampleIndex, MatchesMegatronOneEpoch) {
  const std::vector<int32_t> sizes = {5, 3, 7, 2, 9, 4};
  const std::vector<int64_t> documents = {0, 1, 2, 3, 4, 5};
  const EpochPlan plan = plan_epochs(30, 4, 0);
  NumpyRandomState rng(1234);
  const auto doc = build_document_index(documents, plan, &rng);
  EXPECT_EQ(doc, (std::vector<int64_t>{2, 1, 5, 0, 4, 3}));
  const auto sample = build_sample_index(sizes, doc, 4, plan.num_epochs, 30);
  EXPECT_EQ(sample, boundaries({{0, 0}, {0, 4}, {1, 1}, {2, 2}, {3, 2}, {4, 1}, {4, 5}, {5, 0}}));
  EXPECT_EQ(build_shuffle_index(7, 7, &rng), (std::vector<int64_t>{5, 0, 3, 4, 2, 6, 1}));
}

TEST(SampleIndex, MatchesMegatronTwoEpochsShuffledTogether) {
  const std::vector<int32_t> sizes = {5, 3, 7, 2, 9, 4};
  const std::vector<int64_t> documents = {1, 2, 3, 4};  // 21 tokens per epoch
  const EpochPlan plan = plan_epochs(21, 3, 12);
  ASSERT_EQ(plan.num_epochs, 2);
  ASSERT_FALSE(plan.separate_final_epoch);
  NumpyRandomState rng(7);
  const auto doc = build_document_index(documents, plan, &rng);
  EXPECT_EQ(doc, (std::vector<int64_t>{3, 2, 1, 3, 4, 2, 1, 4}));
  const auto sample = build_sample_index(sizes, doc, 3, plan.num_epochs, 21);
  EXPECT_EQ(sample, boundaries({{0, 0}, {1, 1}, {1, 4}, {2, 0}, {3, 0}, {4, 1}, {4, 4}, {4, 7},
                                {5, 1}, {5, 4}, {6, 0}, {7, 0}, {7, 3}, {7, 6}}));
  EXPECT_EQ(build_shuffle_index(13, 13, &rng),
            (std::vector<int64_t>{1, 3, 2, 5, 10, 0, 4, 6, 12, 11, 9, 8, 7}));
}

TEST(SampleIndex, MatchesMegatronSeparateFinalEpoch) {
  const std::vector<int32_t> sizes = {5, 3, 7, 2, 9, 4};
  const std::vector<int64_t> documents = {0, 1, 2, 3, 4, 5};
  const EpochPlan plan = plan_epochs(30, 4, 8);
  ASSERT_TRUE(plan.separate_final_epoch);
  NumpyRandomState rng(1234);
  const auto doc = build_document_index(documents, plan, &rng);
  EXPECT_EQ(doc, (std::vector<int64_t>{2, 1, 5, 0, 4, 3, 0, 4, 3, 2, 5, 1}));
  const auto sample = build_sample_index(sizes, doc, 4, plan.num_epochs, 30);
  EXPECT_EQ(sample.size(), 15u);
  EXPECT_EQ(sample.back(), (SampleBoundary{10, 3}));
  EXPECT_EQ(build_shuffle_index(plan.samples_before_final_epoch, 14, &rng),
            (std::vector<int64_t>{1, 0, 3, 2, 5, 4, 6, 9, 10, 12, 8, 11, 13, 7}));
}

TEST(SampleIndex, LastSampleMayEndOnTheLastToken) {
  // 9 tokens, seq_length 4: 2 samples, the second ending on the very last token.
  const std::vector<int32_t> sizes = {9};
  const std::vector<int64_t> documents = {0};
  EXPECT_EQ(build_sample_index(sizes, documents, 4, 1, 9), boundaries({{0, 0}, {0, 4}, {0, 8}}));
}

}  // namespace
}  // namespace moefold
