// The row-wise formulas of tensor/row_math.h, which the CPU kernels and the CUDA kernels both
// run, checked on the CPU against float64 references and finite differences. A GPU then only
// adds launch shapes and reductions (tests/tensor/cuda).
#include "tensor/row_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

// y = x·rstd(x)·w for one row, in float through the shared functions.
std::vector<float> rmsnorm_row(const std::vector<float>& x, const std::vector<float>& w,
                               float eps) {
  float sum_sq = 0.0f;
  for (float v : x) sum_sq += v * v;
  const float rstd = rmsnorm_rstd(sum_sq, static_cast<int64_t>(x.size()), eps);
  std::vector<float> y(x.size());
  for (size_t h = 0; h < x.size(); ++h) y[h] = x[h] * rstd * w[h];
  return y;
}

TEST(RowMath, RmsNormMatchesDoubleReferenceAndFiniteDifferences) {
  const int64_t H = 24;
  const float eps = 1e-5f;
  auto x = random_floats(H, 1);
  const auto w = random_floats(H, 2, 0.5f, 1.5f), dy = random_floats(H, 3);
  double sum_sq = 0.0;
  for (float v : x) sum_sq += double(v) * v;
  const double rstd_ref = 1.0 / std::sqrt(sum_sq / H + eps);
  std::vector<double> y_ref(H);
  for (int64_t h = 0; h < H; ++h) y_ref[h] = x[h] * rstd_ref * w[h];
  testing::expect_close(rmsnorm_row(x, w, eps), y_ref, 1e-6, 1e-5, "y");

  const float rstd = static_cast<float>(rstd_ref);
  float dot = 0.0f;
  for (int64_t h = 0; h < H; ++h) dot += dy[h] * w[h] * x[h];
  const float coeff = rmsnorm_backward_coeff(dot, rstd, H);
  std::vector<float> dx(H);
  for (int64_t h = 0; h < H; ++h) dx[h] = rmsnorm_dx(dy[h], w[h], x[h], rstd, coeff);
  testing::expect_gradient_matches(
      x, dx, [&] { return testing::weighted_sum(dy, rmsnorm_row(x, w, eps)); }, 1e-3f, 1e-3,
      1e-2, "dx");
}

// One attention row as the bf16 CUDA path computes it from its float32 scores: the max and
// the sum of exp(s − max) over visible keys, lse, then P and dS from lse alone.
struct AttentionRow {
  float lse;
  std::vector<float> p, ds;
};

AttentionRow attention_row(const std::vector<float>& s, const std::vector<bool>& visible,
                           const std::vector<float>& dp) {
  float row_max = -INFINITY, sum = 0.0f;
  for (size_t j = 0; j < s.size(); ++j) {
    if (visible[j]) row_max = std::max(row_max, s[j]);
  }
  for (size_t j = 0; j < s.size(); ++j) {
    if (visible[j]) sum += std::exp(s[j] - row_max);
  }
  AttentionRow row{attention_lse(row_max, sum), {}, {}};
  float delta = 0.0f;  // Σ P·dP, which rowsum(dO ⊙ O) equals
  for (size_t j = 0; j < s.size(); ++j) {
    row.p.push_back(attention_probability(s[j], row.lse, visible[j]));
    delta += row.p[j] * dp[j];
  }
  for (size_t j = 0; j < s.size(); ++j) {
    row.ds.push_back(softmax_gradient(dp[j], row.p[j], delta));
  }
  return row;
}

TEST(RowMath, AttentionRowFromLseMatchesDoubleSoftmaxAndFiniteDifferences) {
  const int64_t n = 37;
  auto s = random_floats(n, 11, -6.0f, 6.0f);
  const auto dp = random_floats(n, 12);
  std::vector<bool> visible(n);
  const int32_t q_pos = 20;
  for (int64_t j = 0; j < n; ++j) {
    visible[j] = key_visible(q_pos, static_cast<int32_t>(j * 7 % n));
  }
  const AttentionRow row = attention_row(s, visible, dp);

  double m = -INFINITY, z = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    if (visible[j]) m = std::max(m, double(s[j]));
  }
  for (int64_t j = 0; j < n; ++j) {
    if (visible[j]) z += std::exp(s[j] - m);
  }
  EXPECT_NEAR(row.lse, m + std::log(z), 1e-5);
  std::vector<double> p_ref(n), ds_ref(n);
  double delta = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    p_ref[j] = visible[j] ? std::exp(s[j] - m) / z : 0.0;
    delta += p_ref[j] * dp[j];
  }
  for (int64_t j = 0; j < n; ++j) ds_ref[j] = p_ref[j] * (dp[j] - delta);
  testing::expect_close(row.p, p_ref, 1e-6, 1e-5, "P");
  testing::expect_close(row.ds, ds_ref, 1e-6, 1e-5, "dS");
  for (int64_t j = 0; j < n; ++j) {
    if (!visible[j]) {
      EXPECT_EQ(row.p[j], 0.0f) << "a hidden key has weight";
    }
  }
  // dS is the gradient of Σ dP·P with respect to the scores.
  testing::expect_gradient_matches(
      s, row.ds, [&] { return testing::weighted_sum(dp, attention_row(s, visible, dp).p); },
      1e-3f, 1e-3, 1e-2, "dS");
}

TEST(RowMath, AttentionRowWithNoVisibleKeyHasMinusInfinityLseAndNoWeight) {
  const std::vector<float> s = {0.5f, -1.0f, 2.0f};
  const AttentionRow row = attention_row(s, {false, false, false}, {1.0f, 2.0f, 3.0f});
  EXPECT_EQ(row.lse, -INFINITY);
  for (size_t j = 0; j < s.size(); ++j) {
    EXPECT_EQ(row.p[j], 0.0f);
    EXPECT_EQ(row.ds[j], 0.0f);
  }
}

TEST(RowMath, AttentionVisiblePrefixHoldsEveryVisibleKeyAndEndsAtOne) {
  const std::vector<int32_t> k_sorted = {0, 1, 2, 3, 4, 5, 6, 7};
  const std::vector<int32_t> q_chunk = {2, 4, 3};
  EXPECT_EQ(attention_visible_prefix(q_chunk.data(), 3, k_sorted.data(), 8), 5);
  EXPECT_EQ(attention_visible_prefix(q_chunk.data(), 0, k_sorted.data(), 8), 0);
  const std::vector<int32_t> none = {-1};
  EXPECT_EQ(attention_visible_prefix(none.data(), 1, k_sorted.data(), 8), 0);
  // Keys in any order (ring attention's, or a packed document's): a sweep.
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto q = testing::random_ints(5, seed, 0, 30);
    const auto k = testing::random_ints(17, seed + 100, 0, 30);
    const int64_t prefix = attention_visible_prefix(q.data(), 5, k.data(), 17);
    for (int64_t j = prefix; j < 17; ++j) {
      for (int32_t p : q) EXPECT_FALSE(key_visible(p, k[j])) << "key " << j << " is cut off";
    }
    if (prefix > 0) {
      bool seen = false;
      for (int32_t p : q) seen = seen || key_visible(p, k[prefix - 1]);
      EXPECT_TRUE(seen) << "the prefix ends at a hidden key";
    }
  }
}

TEST(RowMath, RopeRotationMatchesDoubleAnglesAndInvertsItself) {
  const int64_t d = 16;
  for (int64_t position : {0, 1, 17, 4095, 131071}) {
    for (int64_t i = 0; i < d / 2; ++i) {
      const double expected = position * std::pow(10000.0, -2.0 * i / d);
      EXPECT_NEAR(rope_angle(position, i, d, 10000.0f), expected, 1e-12 * (1.0 + expected));
    }
  }
  const double angle = rope_angle(37, 3, d, 10000.0f);
  const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
  float y1, y2, back1, back2;
  rope_rotate(0.3f, -1.2f, c, s, &y1, &y2);
  EXPECT_NEAR(y1, 0.3 * std::cos(angle) + 1.2 * std::sin(angle), 1e-6);
  EXPECT_NEAR(y2, -1.2 * std::cos(angle) + 0.3 * std::sin(angle), 1e-6);
  rope_rotate(y1, y2, c, -s, &back1, &back2);  // the backward rotation undoes the forward one
  EXPECT_NEAR(back1, 0.3f, 1e-6);
  EXPECT_NEAR(back2, -1.2f, 1e-6);
}

TEST(RowMath, SigmoidAndItsGradientMatchDoubleReferenceAndFiniteDifferences) {
  for (float z : {-30.0f, -4.5f, -0.3f, 0.0f, 0.7f, 6.0f, 30.0f}) {
    const double expected = 1.0 / (1.0 + std::exp(-double(z)));
    EXPECT_NEAR(sigmoid_value(z), expected, 1e-6 * (1.0 + expected)) << z;
    const float h = 1e-2f;
    const double numeric = (double(sigmoid_value(z + h)) - sigmoid_value(z - h)) / (2.0 * h);
    EXPECT_NEAR(sigmoid_gradient(0.8f, sigmoid_value(z)), 0.8 * numeric, 1e-4) << z;
  }
}

TEST(RowMath, SoftmaxGradientMatchesFiniteDifferences) {
  const int64_t E = 6;
  auto z = random_floats(E, 4, -3.0f, 3.0f);
  const auto dp = random_floats(E, 5);
  auto softmax = [&] {
    std::vector<float> p(E);
    double total = 0.0;
    for (int64_t e = 0; e < E; ++e) total += std::exp(double(z[e]));
    for (int64_t e = 0; e < E; ++e) p[e] = static_cast<float>(std::exp(double(z[e])) / total);
    return p;
  };
  const std::vector<float> p = softmax();
  float dot = 0.0f;
  for (int64_t e = 0; e < E; ++e) dot += dp[e] * p[e];
  std::vector<float> dz(E);
  for (int64_t e = 0; e < E; ++e) dz[e] = softmax_gradient(dp[e], p[e], dot);
  testing::expect_gradient_matches(
      z, dz, [&] { return testing::weighted_sum(dp, softmax()); }, 1e-3f, 1e-4, 1e-3, "dz");
}

TEST(RowMath, AttentionMergeWeightsAreTheLogSumExpOfBothParts) {
  const AttentionMergeWeights m = attention_merge_weights(1.5f, -0.25f);
  const double lse = std::log(std::exp(1.5) + std::exp(-0.25));
  EXPECT_NEAR(m.lse, lse, 1e-6);
  EXPECT_NEAR(m.weight_a, std::exp(1.5 - lse), 1e-6);
  EXPECT_NEAR(m.weight_b, std::exp(-0.25 - lse), 1e-6);
  EXPECT_NEAR(m.weight_a + m.weight_b, 1.0, 1e-6);
  // A part that saw no key (lse −inf) contributes nothing.
  const AttentionMergeWeights only_b = attention_merge_weights(-INFINITY, 2.0f);
  EXPECT_EQ(only_b.lse, 2.0f);
  EXPECT_EQ(only_b.weight_a, 0.0f);
  EXPECT_EQ(only_b.weight_b, 1.0f);
  const AttentionMergeWeights only_a = attention_merge_weights(-3.0f, -INFINITY);
  EXPECT_EQ(only_a.lse, -3.0f);
  EXPECT_EQ(only_a.weight_b, 0.0f);
  EXPECT_TRUE(key_visible(5, 5));
  EXPECT_TRUE(key_visible(5, 0));
  EXPECT_FALSE(key_visible(5, 6));
}

TEST(RowMath, CrossEntropyGradientMatchesFiniteDifferences) {
  const int64_t V = 9;
  const int32_t label = 4;
  const float weight = 0.75f;
  auto z = random_floats(V, 6, -2.0f, 2.0f);
  auto loss = [&] {  // weight·(log Σ exp z − z[label]) in double
    double total = 0.0;
    for (float v : z) total += std::exp(double(v));
    return weight * (std::log(total) - z[label]);
  };
  float max = z[0];
  for (float v : z) max = std::max(max, v);
  float total = 0.0f;
  for (float v : z) total += exp_approx(v - max);
  std::vector<float> grad(V);
  for (int64_t v = 0; v < V; ++v) {
    grad[v] = cross_entropy_gradient(exp_approx(z[v] - max), weight / total, v == label, weight);
  }
  double grad_sum = 0.0;
  for (float g : grad) grad_sum += g;
  EXPECT_NEAR(grad_sum, 0.0, 1e-6) << "softmax − onehot sums to zero";
  testing::expect_gradient_matches(z, grad, loss, 1e-3f, 1e-4, 1e-3, "dz");
}

}  // namespace
}  // namespace moefold
