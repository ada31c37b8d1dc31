#include "tensor/cpu/permute.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;
using moefold::testing::weighted_sum;

TEST(Permute, StableOrderAndCountsWithDroppedAssignments) {
  const int64_t N = 4, K = 2, E = 3;
  const std::vector<int32_t> idx = {2, 0,  //
                                    0, 1,  //
                                    2, 1,  //
                                    0, 2};
  const std::vector<uint8_t> keep = {1, 1, 1, 0, 1, 1, 0, 1};
  std::vector<int64_t> counts(E);
  std::vector<int32_t> perm(N * K, -1);
  const int64_t R = build_expert_permutation(idx.data(), keep.data(), N, K, E, counts.data(),
                                             perm.data());
  EXPECT_EQ(R, 6);
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 1, 3}));
  // expert 0: assignments 1 (t0), 2 (t1); expert 1: 5 (t2); expert 2: 0 (t0), 4 (t2), 7 (t3).
  EXPECT_EQ(std::vector<int32_t>(perm.begin(), perm.begin() + R),
            (std::vector<int32_t>{1, 2, 5, 0, 4, 7}));

  const int64_t all = build_expert_permutation(idx.data(), nullptr, N, K, E, counts.data(),
                                               perm.data());
  EXPECT_EQ(all, N * K);
  EXPECT_EQ(counts, (std::vector<int64_t>{3, 2, 3}));
}

struct Routed {
  int64_t N = 6, K = 2, E = 4, H = 5, R = 0;
  std::vector<int32_t> idx = {0, 3, 3, 1, 2, 0, 3, 0, 1, 2, 0, 1};
  std::vector<int64_t> counts = std::vector<int64_t>(4);
  std::vector<int32_t> perm = std::vector<int32_t>(12);
  Routed() {
    R = build_expert_permutation(idx.data(), nullptr, N, K, E, counts.data(), perm.data());
  }
};

TEST(Permute, PermuteThenCombineWithUnitWeightsCountsEachTokenKTimes) {
  const Routed r;
  const auto x = random_floats(r.N * r.H, 1);
  std::vector<float> rows(r.R * r.H), out(r.N * r.H, 0.0f);
  permute_tokens(x.data(), r.perm.data(), rows.data(), r.R, r.K, r.H);
  const std::vector<float> ones(r.N * r.K, 1.0f);
  combine_tokens(rows.data(), r.perm.data(), ones.data(), out.data(), r.R, r.K, r.H);
  for (int64_t i = 0; i < r.N * r.H; ++i) EXPECT_FLOAT_EQ(out[i], r.K * x[i]);
}

TEST(Permute, BackwardIsTheAdjointOfPermute) {
  const Routed r;
  const auto x = random_floats(r.N * r.H, 2);
  const auto dout = random_floats(r.R * r.H, 3);
  std::vector<float> rows(r.R * r.H), dx(r.N * r.H, 0.0f);
  permute_tokens(x.data(), r.perm.data(), rows.data(), r.R, r.K, r.H);
  permute_tokens_backward(dout.data(), r.perm.data(), dx.data(), r.R, r.K, r.H);
  // <P x, y> == <x, Pᵀ y>
  EXPECT_NEAR(weighted_sum(rows, dout), weighted_sum(x, dx), 1e-5);
}

TEST(Combine, ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences) {
  const Routed r;
  auto y = random_floats(r.R * r.H, 4);
  auto weights = random_floats(r.N * r.K, 5, 0.1f, 1.0f);
  const auto base = random_floats(r.N * r.H, 6);
  const auto dout = random_floats(r.N * r.H, 7);

  std::vector<float> out = base;
  combine_tokens(y.data(), r.perm.data(), weights.data(), out.data(), r.R, r.K, r.H);
  std::vector<double> expected(base.begin(), base.end());
  for (int64_t row = 0; row < r.R; ++row) {
    const int64_t t = r.perm[row] / r.K;
    for (int64_t h = 0; h < r.H; ++h) {
      expected[t * r.H + h] += static_cast<double>(weights[r.perm[row]]) * y[row * r.H + h];
    }
  }
  moefold::testing::expect_close(out, expected, 1e-6, 1e-6, "combine");

  std::vector<float> dy(r.R * r.H), dweights(r.N * r.K, 0.0f);
  combine_tokens_backward(dout.data(), y.data(), r.perm.data(), weights.data(), dy.data(),
                          dweights.data(), r.R, r.K, r.H);
  auto loss = [&] {
    std::vector<float> o(r.N * r.H, 0.0f);
    combine_tokens(y.data(), r.perm.data(), weights.data(), o.data(), r.R, r.K, r.H);
    return weighted_sum(dout, o);
  };
  moefold::testing::expect_gradient_matches(y, dy, loss, 1e-2f, 1e-3, 1e-3, "dy");
  moefold::testing::expect_gradient_matches(weights, dweights, loss, 1e-2f, 1e-3, 1e-3, "dw");
}

TEST(Combine, DroppedAssignmentsGetNoWeightGradient) {
  const int64_t N = 2, K = 2, E = 2, H = 3;
  const std::vector<int32_t> idx = {0, 1, 1, 0};
  const std::vector<uint8_t> keep = {1, 0, 1, 1};
  std::vector<int64_t> counts(E);
  std::vector<int32_t> perm(N * K);
  const int64_t R = build_expert_permutation(idx.data(), keep.data(), N, K, E, counts.data(),
                                             perm.data());
  const auto y = random_floats(R * H, 8);
  const auto dout = random_floats(N * H, 9);
  const std::vector<float> weights = {0.5f, 0.5f, 0.25f, 0.75f};
  std::vector<float> dy(R * H), dweights(N * K, 7.0f);
  combine_tokens_backward(dout.data(), y.data(), perm.data(), weights.data(), dy.data(),
                          dweights.data(), R, K, H);
  EXPECT_EQ(dweights[1], 7.0f);
  EXPECT_NE(dweights[0], 7.0f);
}

}  // namespace
}  // namespace moefold::cpu
