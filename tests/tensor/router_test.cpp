#include "tensor/cpu/router.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;

TEST(Router, SoftmaxAndLogSumExpMatchDoubleReference) {
  const int64_t N = 4, E = 9;
  const auto z = random_floats(N * E, 1, -8.0f, 8.0f);
  std::vector<float> p(N * E), lse(N);
  softmax_rows_forward(z.data(), p.data(), N, E);
  logsumexp_rows(z.data(), lse.data(), N, E);
  std::vector<double> expected_p(N * E), expected_lse(N);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(static_cast<double>(z[n * E + e]));
    expected_lse[n] = std::log(sum);
    for (int64_t e = 0; e < E; ++e) expected_p[n * E + e] = std::exp(z[n * E + e]) / sum;
  }
  moefold::testing::expect_close(p, expected_p, 1e-7, 1e-5, "softmax");
  moefold::testing::expect_close(lse, expected_lse, 1e-6, 1e-6, "logsumexp");
}

TEST(Router, SoftmaxBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, E = 5;
  auto z = random_floats(N * E, 2, -3.0f, 3.0f);
  const auto dp = random_floats(N * E, 3);
  std::vector<float> p(N * E), dz(N * E);
  softmax_rows_forward(z.data(), p.data(), N, E);
  softmax_rows_backward(dp.data(), p.data(), dz.data(), N, E);
  auto loss = [&] {
    std::vector<float> p2(N * E);
    softmax_rows_forward(z.data(), p2.data(), N, E);
    return moefold::testing::weighted_sum(dp, p2);
  };
  moefold::testing::expect_gradient_matches(z, dz, loss, 1e-2f, 5e-4, 1e-3, "dz");
}

TEST(Router, SigmoidForwardAndBackward) {
  const int64_t n = 20;
  auto z = random_floats(n, 4, -6.0f, 6.0f);
  std::vector<float> s(n), dz(n);
  sigmoid_forward(z.data(), s.data(), n);
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) expected[i] = 1.0 / (1.0 + std::exp(-static_cast<double>(z[i])));
  moefold::testing::expect_close(s, expected, 1e-7, 1e-6, "sigmoid");
  const auto ds = random_floats(n, 5);
  sigmoid_backward(ds.data(), s.data(), dz.data(), n);
  auto loss = [&] {
    std::vector<float> s2(n);
    sigmoid_forward(z.data(), s2.data(), n);
    return moefold::testing::weighted_sum(ds, s2);
  };
  moefold::testing::expect_gradient_matches(z, dz, loss, 1e-2f, 5e-4, 1e-3, "dz");
}

TEST(Router, TopKOrdersDescendingAndBreaksTiesTowardsLowerIndex) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> scores = {
      0.1f, 0.5f, 0.5f, 0.2f, 0.5f,  // three-way tie: 1, 2, 4
      -inf, 0.3f, -inf, 0.3f, 0.9f,  // -inf picked last, lowest index first
      0.0f, 0.0f, 0.0f, 0.0f, 0.0f,  // all tied
  };
  std::vector<int32_t> idx(3 * 4);
  std::vector<float> val(3 * 4);
  topk_rows(scores.data(), 3, 5, 4, idx.data(), val.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4, 3, 4, 1, 3, 0, 0, 1, 2, 3}));
  EXPECT_EQ(val[0], 0.5f);
  EXPECT_EQ(val[3], 0.2f);
  EXPECT_EQ(val[7], -inf);
}

TEST(Router, TopKMatchesSortOnRandomScores) {
  const int64_t N = 50, E = 16, k = 3;
  const auto scores = random_floats(N * E, 6);
  std::vector<int32_t> idx(N * k);
  topk_rows(scores.data(), N, E, k, idx.data(), nullptr);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < k; ++j) {
      const float chosen = scores[n * E + idx[n * k + j]];
      int64_t larger = 0;  // scores above the j-th pick: exactly j of them
      for (int64_t e = 0; e < E; ++e) larger += scores[n * E + e] > chosen;
      EXPECT_EQ(larger, j) << "row " << n;
    }
  }
}

}  // namespace
}  // namespace moefold::cpu
