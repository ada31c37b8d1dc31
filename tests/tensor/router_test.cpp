// The router's ops through the seam (tensor/ops.h): softmax, log-sum-exp and sigmoid against
// float64 references and finite differences, and the host top-k.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

Tensor scores_of(int64_t N, int64_t E, const std::vector<float>& values) {
  return Tensor::from_vector({N, E}, values);
}

std::vector<float> softmax(const std::vector<float>& z, int64_t N, int64_t E) {
  const Tensor p = Tensor::zeros({N, E});
  ops::softmax_rows_forward(scores_of(N, E, z), p);
  return p.to_vector();
}

std::vector<float> sigmoid(const std::vector<float>& z) {
  const int64_t n = static_cast<int64_t>(z.size());
  const Tensor s = Tensor::zeros({n});
  ops::sigmoid_forward(Tensor::from_vector({n}, z), s);
  return s.to_vector();
}

TEST(Router, SoftmaxAndLogSumExpMatchDoubleReference) {
  const int64_t N = 4, E = 9;
  const auto z = random_floats(N * E, 1, -8.0f, 8.0f);
  const std::vector<float> p = softmax(z, N, E);
  const Tensor lse_t = Tensor::zeros({N});
  ops::logsumexp_rows(scores_of(N, E, z), lse_t);
  const std::vector<float> lse = lse_t.to_vector();
  std::vector<double> expected_p(N * E), expected_lse(N);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(static_cast<double>(z[n * E + e]));
    expected_lse[n] = std::log(sum);
    for (int64_t e = 0; e < E; ++e) expected_p[n * E + e] = std::exp(z[n * E + e]) / sum;
  }
  testing::expect_close(p, expected_p, 1e-7, 1e-5, "softmax");
  testing::expect_close(lse, expected_lse, 1e-6, 1e-6, "logsumexp");
}

TEST(Router, SoftmaxBackwardMatchesFiniteDifferences) {
  const int64_t N = 3, E = 5;
  auto z = random_floats(N * E, 2, -3.0f, 3.0f);
  const auto dp = random_floats(N * E, 3);
  const Tensor dz = Tensor::zeros({N, E});
  ops::softmax_rows_backward(scores_of(N, E, dp), scores_of(N, E, softmax(z, N, E)), dz);
  auto loss = [&] { return testing::weighted_sum(dp, softmax(z, N, E)); };
  testing::expect_gradient_matches(z, dz.to_vector(), loss, 1e-2f, 5e-4, 1e-3, "dz");
}

TEST(Router, SigmoidForwardAndBackward) {
  const int64_t n = 20;
  auto z = random_floats(n, 4, -6.0f, 6.0f);
  const std::vector<float> s = sigmoid(z);
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) expected[i] = 1.0 / (1.0 + std::exp(-static_cast<double>(z[i])));
  testing::expect_close(s, expected, 1e-7, 1e-6, "sigmoid");
  const auto ds = random_floats(n, 5);
  const Tensor dz = Tensor::zeros({n});
  ops::sigmoid_backward(Tensor::from_vector({n}, ds), Tensor::from_vector({n}, s), dz);
  auto loss = [&] { return testing::weighted_sum(ds, sigmoid(z)); };
  testing::expect_gradient_matches(z, dz.to_vector(), loss, 1e-2f, 5e-4, 1e-3, "dz");
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
  ops::topk_rows(scores.data(), 3, 5, 4, idx.data(), val.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4, 3, 4, 1, 3, 0, 0, 1, 2, 3}));
  EXPECT_EQ(val[0], 0.5f);
  EXPECT_EQ(val[3], 0.2f);
  EXPECT_EQ(val[7], -inf);
}

TEST(Router, TopKMatchesSortOnRandomScores) {
  const int64_t N = 50, E = 16, k = 3;
  const auto scores = random_floats(N * E, 6);
  std::vector<int32_t> idx(N * k);
  ops::topk_rows(scores.data(), N, E, k, idx.data(), nullptr);
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
}  // namespace moefold
