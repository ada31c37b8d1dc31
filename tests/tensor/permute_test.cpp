// Token permutation and combination through the seam (tensor/ops.h): the host permutation,
// adjoints, a float64 reference and finite differences.
#include <gtest/gtest.h>

#include <span>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;
using testing::weighted_sum;

TEST(Permute, StableOrderAndCountsWithDroppedAssignments) {
  const int64_t N = 4, K = 2, E = 3;
  const std::vector<int32_t> idx = {2, 0,  //
                                    0, 1,  //
                                    2, 1,  //
                                    0, 2};
  const std::vector<uint8_t> keep = {1, 1, 1, 0, 1, 1, 0, 1};
  std::vector<int64_t> counts(E);
  std::vector<int32_t> perm(N * K, -1);
  const int64_t R = ops::build_expert_permutation(idx.data(), keep.data(), N, K, E, counts.data(),
                                             perm.data());
  EXPECT_EQ(R, 6);
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 1, 3}));
  // expert 0: assignments 1 (t0), 2 (t1); expert 1: 5 (t2); expert 2: 0 (t0), 4 (t2), 7 (t3).
  EXPECT_EQ(std::vector<int32_t>(perm.begin(), perm.begin() + R),
            (std::vector<int32_t>{1, 2, 5, 0, 4, 7}));

  const int64_t all = ops::build_expert_permutation(idx.data(), nullptr, N, K, E, counts.data(),
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
    R = ops::build_expert_permutation(idx.data(), nullptr, N, K, E, counts.data(), perm.data());
  }
  std::span<const int32_t> kept() const { return {perm.data(), static_cast<size_t>(R)}; }
  Tensor rows(int64_t n, const std::vector<float>& values) const {
    return Tensor::from_vector({n, H}, values);
  }
  Tensor weights(const std::vector<float>& values) const {
    return Tensor::from_vector({N, K}, values);
  }
  // out (N,H) += Σ_j w[t,j]·y[r] over the rows r of token t.
  std::vector<float> combine(const std::vector<float>& y, const std::vector<float>& w,
                             const std::vector<float>& base) const {
    const Tensor out = rows(N, base);
    ops::combine_tokens(rows(R, y), kept(), weights(w), out);
    return out.to_vector();
  }
};

TEST(Permute, PermuteThenCombineWithUnitWeightsCountsEachTokenKTimes) {
  const Routed r;
  const auto x = random_floats(r.N * r.H, 1);
  const Tensor rows = Tensor::zeros({r.R, r.H});
  ops::permute_tokens(r.rows(r.N, x), r.kept(), rows, r.K);
  const std::vector<float> out = r.combine(rows.to_vector(), std::vector<float>(r.N * r.K, 1.0f),
                                           std::vector<float>(r.N * r.H, 0.0f));
  for (int64_t i = 0; i < r.N * r.H; ++i) EXPECT_FLOAT_EQ(out[i], r.K * x[i]);
}

TEST(Permute, BackwardIsTheAdjointOfPermute) {
  const Routed r;
  const auto x = random_floats(r.N * r.H, 2);
  const auto dout = random_floats(r.R * r.H, 3);
  const Tensor rows = Tensor::zeros({r.R, r.H}), dx = Tensor::zeros({r.N, r.H});
  ops::permute_tokens(r.rows(r.N, x), r.kept(), rows, r.K);
  ops::permute_tokens_backward(r.rows(r.R, dout), r.kept(), dx, r.K);
  // <P x, y> == <x, Pᵀ y>
  EXPECT_NEAR(weighted_sum(rows.to_vector(), dout), weighted_sum(x, dx.to_vector()), 1e-5);
}

TEST(Combine, ForwardMatchesReferenceAndBackwardMatchesFiniteDifferences) {
  const Routed r;
  auto y = random_floats(r.R * r.H, 4);
  auto weights = random_floats(r.N * r.K, 5, 0.1f, 1.0f);
  const auto base = random_floats(r.N * r.H, 6);
  const auto dout = random_floats(r.N * r.H, 7);

  const std::vector<float> out = r.combine(y, weights, base);
  std::vector<double> expected(base.begin(), base.end());
  for (int64_t row = 0; row < r.R; ++row) {
    const int64_t t = r.perm[row] / r.K;
    for (int64_t h = 0; h < r.H; ++h) {
      expected[t * r.H + h] += static_cast<double>(weights[r.perm[row]]) * y[row * r.H + h];
    }
  }
  testing::expect_close(out, expected, 1e-6, 1e-6, "combine");

  const Tensor dy = Tensor::zeros({r.R, r.H}), dweights = Tensor::zeros({r.N, r.K});
  ops::combine_tokens_backward(r.rows(r.N, dout), r.rows(r.R, y), r.kept(), r.weights(weights),
                               dy, dweights);
  auto loss = [&] {
    return weighted_sum(dout, r.combine(y, weights, std::vector<float>(r.N * r.H, 0.0f)));
  };
  testing::expect_gradient_matches(y, dy.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dy");
  testing::expect_gradient_matches(weights, dweights.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dw");
}

TEST(Combine, DroppedAssignmentsGetNoWeightGradient) {
  const int64_t N = 2, K = 2, E = 2, H = 3;
  const std::vector<int32_t> idx = {0, 1, 1, 0};
  const std::vector<uint8_t> keep = {1, 0, 1, 1};
  std::vector<int64_t> counts(E);
  std::vector<int32_t> perm(N * K);
  const int64_t R = ops::build_expert_permutation(idx.data(), keep.data(), N, K, E, counts.data(),
                                             perm.data());
  const auto y = random_floats(R * H, 8);
  const auto dout = random_floats(N * H, 9);
  const std::vector<float> weights = {0.5f, 0.5f, 0.25f, 0.75f};
  const Tensor dy = Tensor::zeros({R, H});
  const Tensor dweights = Tensor::from_vector({N, K}, std::vector<float>(N * K, 7.0f));
  ops::combine_tokens_backward(Tensor::from_vector({N, H}, dout), Tensor::from_vector({R, H}, y),
                               std::span<const int32_t>(perm.data(), static_cast<size_t>(R)),
                               Tensor::from_vector({N, K}, weights), dy, dweights);
  const std::vector<float> got = dweights.to_vector();
  EXPECT_EQ(got[1], 7.0f);
  EXPECT_NE(got[0], 7.0f);
}

}  // namespace
}  // namespace moefold
