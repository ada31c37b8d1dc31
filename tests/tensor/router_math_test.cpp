// The router's row math (tensor/router_math.h), which the CPU backend and the CUDA kernels both
// run, against a float64 reference written independently here (sorting for the top-k) and the
// backward against central differences of that reference's loss.
#include "tensor/router_math.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

// Indices of `scores` by descending score, equal scores by lower index (stable sort).
std::vector<int32_t> sorted_order(const std::vector<double>& scores) {
  std::vector<int32_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return scores[a] > scores[b]; });
  return order;
}

// One row in float64: scores, the group-limited choice, gates and lse.
struct RefRow {
  std::vector<double> probs, gates;
  std::vector<int32_t> idx;
  double lse = 0.0;
};

RefRow reference_row(const RouterRowConfig& c, const std::vector<double>& z,
                     const std::vector<float>& bias) {
  const int E = c.experts, k = c.topk;
  RefRow r;
  r.probs.resize(E);
  double max = *std::max_element(z.begin(), z.end()), sum = 0.0;
  for (int e = 0; e < E; ++e) sum += std::exp(z[e] - max);
  r.lse = max + std::log(sum);
  for (int e = 0; e < E; ++e) {
    r.probs[e] = c.softmax ? std::exp(z[e] - r.lse) : 1.0 / (1.0 + std::exp(-z[e]));
  }
  std::vector<double> select(E);
  for (int e = 0; e < E; ++e) select[e] = r.probs[e] + (bias.empty() ? 0.0 : bias[e]);
  if (c.num_groups > 0) {
    const int size = E / c.num_groups, per_group = k / c.group_topk;
    std::vector<double> group_score(c.num_groups, 0.0);
    for (int g = 0; g < c.num_groups; ++g) {
      std::vector<double> members(select.begin() + g * size, select.begin() + (g + 1) * size);
      std::sort(members.rbegin(), members.rend());
      for (int i = 0; i < per_group; ++i) group_score[g] += members[i];
    }
    const std::vector<int32_t> groups = sorted_order(group_score);
    for (int i = c.group_topk; i < c.num_groups; ++i) {
      for (int e = groups[i] * size; e < (groups[i] + 1) * size; ++e) select[e] = -INFINITY;
    }
  }
  const std::vector<int32_t> order = sorted_order(select);
  r.idx.assign(order.begin(), order.begin() + k);
  double gate_sum = 0.0;
  for (int j = 0; j < k; ++j) {
    const double v = c.softmax && !c.pre_softmax ? std::exp(z[r.idx[j]]) : r.probs[r.idx[j]];
    r.gates.push_back(v);
    gate_sum += v;
  }
  const bool normalise = (c.softmax && !c.pre_softmax) || (!c.softmax && k > 1);
  for (double& g : r.gates) g = (normalise ? g / gate_sum : g) * c.scaling_factor;
  return r;
}

struct FloatRow {
  std::vector<float> probs, gates;
  std::vector<int32_t> idx;
  float lse = 0.0f;
};

FloatRow float_row(const RouterRowConfig& c, const std::vector<float>& z,
                   const std::vector<float>& bias) {
  FloatRow r{std::vector<float>(c.experts), std::vector<float>(c.topk),
             std::vector<int32_t>(c.topk), 0.0f};
  router_row_forward(c, z.data(), bias.empty() ? nullptr : bias.data(), r.probs.data(),
                     r.idx.data(), r.gates.data(), &r.lse);
  return r;
}

RouterRowConfig config(int E, int k, bool softmax) {
  RouterRowConfig c;
  c.experts = E;
  c.topk = k;
  c.softmax = softmax;
  return c;
}

void expect_forward_matches_reference(const RouterRowConfig& c, const std::vector<float>& z,
                                      const std::vector<float>& bias) {
  const FloatRow f = float_row(c, z, bias);
  const RefRow r = reference_row(c, testing::to_double(z), bias);
  EXPECT_EQ(f.idx, r.idx);
  testing::expect_close(f.probs, r.probs, 1e-7, 1e-6, "probs");
  testing::expect_close(f.gates, r.gates, 1e-7, 1e-6, "gates");
  EXPECT_NEAR(f.lse, r.lse, 1e-6 * (1 + std::abs(r.lse)));
}

TEST(RouterMath, ForwardMatchesFloat64ReferenceInEveryMode) {
  const std::vector<float> z = random_floats(16, 1, -3, 3);
  const std::vector<float> bias = random_floats(16, 2, -0.2f, 0.2f);
  RouterRowConfig post = config(16, 4, true);
  post.scaling_factor = 2.5f;
  expect_forward_matches_reference(post, z, {});
  RouterRowConfig pre = config(16, 3, true);
  pre.pre_softmax = true;
  expect_forward_matches_reference(pre, z, {});
  expect_forward_matches_reference(config(16, 2, false), z, bias);
  expect_forward_matches_reference(config(16, 1, false), z, {});
  RouterRowConfig grouped = config(16, 4, true);
  grouped.num_groups = 4;
  grouped.group_topk = 2;
  expect_forward_matches_reference(grouped, z, {});
  grouped.softmax = false;
  expect_forward_matches_reference(grouped, z, bias);
}

TEST(RouterMath, TopkTiesGoToTheLowerIndexAndMinusInfinityComesLast) {
  const RouterRowConfig c = config(6, 4, true);
  const std::vector<float> probs = {0.2f, 0.5f, 0.2f, 0.5f, 0.1f, 0.0f};
  std::vector<int32_t> idx(4);
  std::vector<float> scores(6);
  router_row_topk(c, probs.data(), nullptr, idx.data(), scores.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 3, 0, 2}));
  // Bias −inf makes experts 1 and 3 last; among the −inf scores, the lower index first.
  const std::vector<float> flat(6, 0.1f), bias = {0, -INFINITY, 0, -INFINITY, 0, 0};
  RouterRowConfig all = config(6, 6, false);
  std::vector<int32_t> every(6);
  router_row_topk(all, flat.data(), bias.data(), every.data(), scores.data());
  EXPECT_EQ(every, (std::vector<int32_t>{0, 2, 4, 5, 1, 3}));
}

TEST(RouterMath, GroupLimitedRoutingKeepsTheBestGroups) {
  // Groups {0,1} and {2,3}, scored by their top k/gk = 2 scores: 0.6 against 0.4001.
  RouterRowConfig c = config(4, 2, true);
  c.num_groups = 2;
  c.group_topk = 1;
  const std::vector<float> probs = {0.3f, 0.3f, 0.4f, 1e-4f};
  std::vector<int32_t> idx(2);
  std::vector<float> scores(2);
  EXPECT_EQ(router_row_groups(c, probs.data(), nullptr, idx.data(), scores.data()), uint64_t{1});
  router_row_topk(c, probs.data(), nullptr, idx.data(), scores.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(scores, (std::vector<float>{0.3f, 0.3f}));
  // Equal group scores keep the lower group.
  const std::vector<float> even = {0.25f, 0.25f, 0.25f, 0.25f};
  EXPECT_EQ(router_row_groups(c, even.data(), nullptr, idx.data(), scores.data()), uint64_t{1});
}

TEST(RouterMath, BalanceProbabilitiesAreSoftmaxOrNormalisedSigmoid) {
  const std::vector<float> s = {0.5f, 0.75f};
  const float sum = router_score_sum(s.data(), 2);
  EXPECT_FLOAT_EQ(sum, 1.25f);
  EXPECT_FLOAT_EQ(router_balance_prob(false, s[0], sum), 0.4f);
  EXPECT_FLOAT_EQ(router_balance_prob(true, s[0], sum), 0.5f);
}

// The loss whose gradient router_row_backward returns, in float64 with the routing held fixed:
// Σ_j keep_j·w_j·g_j + balance_weight·Σ_e c_e·P_e + z_factor/2·lse²/z_tokens.
double reference_loss(const RouterBackwardConfig& b, const std::vector<double>& z,
                      const std::vector<float>& bias, const std::vector<int32_t>& idx,
                      const std::vector<float>& w, const std::vector<uint8_t>& keep,
                      const std::vector<int64_t>& counts) {
  const RefRow r = reference_row(b.row, z, bias);
  EXPECT_EQ(r.idx, idx) << "the routing changed under the perturbation";
  double loss = 0.0;
  for (int j = 0; j < b.row.topk; ++j) loss += keep[j] ? w[j] * r.gates[j] : 0.0;
  if (b.balance) {
    const double total = std::accumulate(r.probs.begin(), r.probs.end(), 0.0);
    for (int e = 0; e < b.row.experts; ++e) {
      loss += b.balance_weight * counts[e] * (b.row.softmax ? r.probs[e] : r.probs[e] / total);
    }
  }
  if (b.z_loss) loss += b.z_factor / 2 * r.lse * r.lse / b.z_tokens;
  return loss;
}

void expect_backward_matches_finite_differences(const RouterBackwardConfig& b, uint32_t seed,
                                                bool biased, std::vector<uint8_t> keep = {}) {
  const int E = b.row.experts, k = b.row.topk;
  const std::vector<float> z = random_floats(E, seed, -2, 2);
  const std::vector<float> bias = biased ? random_floats(E, seed + 1, -0.1f, 0.1f)
                                         : std::vector<float>();
  const std::vector<float> w = random_floats(k, seed + 2);
  std::vector<int64_t> counts(E);
  for (int e = 0; e < E; ++e) counts[e] = (e * 7 + seed) % 5;
  if (keep.empty()) keep.assign(k, 1);
  const FloatRow f = float_row(b.row, z, bias);
  std::vector<float> dz(E);
  router_row_backward(b, w.data(), keep.data(), f.gates.data(), f.probs.data(), z.data(),
                      f.idx.data(), f.lse, counts.data(), dz.data());
  std::vector<double> zd = testing::to_double(z);
  const double eps = 1e-5;
  for (int e = 0; e < E; ++e) {
    const double saved = zd[e];
    zd[e] = saved + eps;
    const double plus = reference_loss(b, zd, bias, f.idx, w, keep, counts);
    zd[e] = saved - eps;
    const double minus = reference_loss(b, zd, bias, f.idx, w, keep, counts);
    zd[e] = saved;
    const double numeric = (plus - minus) / (2 * eps);
    EXPECT_NEAR(dz[e], numeric, 2e-5 + 1e-4 * std::abs(numeric)) << "dz[" << e << "]";
  }
  double largest = 0.0;
  for (float d : dz) largest = std::max(largest, std::abs(static_cast<double>(d)));
  EXPECT_GT(largest, 1e-3) << "the check compared real, non-trivial gradients";
}

RouterBackwardConfig with_losses(RouterRowConfig row, bool balance, bool z) {
  RouterBackwardConfig b;
  b.row = row;
  b.balance = balance;
  b.balance_weight = balance ? 0.07 : 0.0;
  b.z_loss = z;
  b.z_factor = 0.3 * 0.05 * 2.0;
  b.z_tokens = 3.0;
  return b;
}

TEST(RouterMath, BackwardMatchesFiniteDifferences) {
  RouterRowConfig post = config(8, 2, true);
  expect_backward_matches_finite_differences(with_losses(post, true, true), 11, false);
  RouterRowConfig pre = config(8, 3, true);
  pre.pre_softmax = true;
  expect_backward_matches_finite_differences(with_losses(pre, true, true), 12, false);
  RouterRowConfig sigmoid = config(8, 2, false);
  expect_backward_matches_finite_differences(with_losses(sigmoid, true, true), 13, true);
  RouterRowConfig top1 = config(8, 1, false);
  expect_backward_matches_finite_differences(with_losses(top1, true, false), 14, false);
  RouterRowConfig grouped = config(8, 4, true);
  grouped.num_groups = 4;
  grouped.group_topk = 2;
  grouped.scaling_factor = 2.5f;
  expect_backward_matches_finite_differences(with_losses(grouped, true, false), 15, false);
  // A dropped assignment's dgate is ignored: its gate term vanishes from the loss too.
  expect_backward_matches_finite_differences(with_losses(post, false, true), 16, false, {1, 0});
  expect_backward_matches_finite_differences(with_losses(sigmoid, false, false), 17, true,
                                             {0, 1});
}

}  // namespace
}  // namespace moefold
