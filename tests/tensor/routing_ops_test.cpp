// The routing ops through the seam (tensor/ops.h route_*) on the CPU backend: rows routed as
// router_math.h routes one row, the load sums against float64 sums, the backward equal to the
// row backward, and bad operands as one clear error naming the op.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "tensor/ops.h"
#include "tensor/router_math.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

constexpr int64_t kRows = 5, kExperts = 6, kTopk = 2;

RouterRowConfig sigmoid_config() {
  RouterRowConfig c;
  c.experts = kExperts;
  c.topk = kTopk;
  c.softmax = false;
  return c;
}

TEST(RoutingOps, RowsLoadSumsAndBackwardAgreeWithTheRowMath) {
  const RouterRowConfig c = sigmoid_config();
  const std::vector<float> z_v = random_floats(kRows * kExperts, 1, -2, 2);
  const Tensor z = Tensor::from_vector({kRows, kExperts}, z_v);
  Tensor probs = Tensor::empty({kRows, kExperts}), gates = Tensor::empty({kRows, kTopk});
  Tensor lse = Tensor::empty({kRows});
  std::vector<int32_t> idx(kRows * kTopk);
  ops::route_forward(z, Tensor(), probs, idx.data(), gates, lse, c);
  const std::vector<int32_t> row_group = {1, 0, 1, 1, 0};
  std::vector<double> sums(2 * kExperts + 1);
  ops::route_load_sums(probs, lse, row_group, 2, sums.data(), c);

  std::vector<double> expected(2 * kExperts + 1, 0.0);
  for (int64_t t = 0; t < kRows; ++t) {
    std::vector<float> p(kExperts), g(kTopk);
    std::vector<int32_t> chosen(kTopk);
    float row_lse = 0.0f;
    router_row_forward(c, z_v.data() + t * kExperts, nullptr, p.data(), chosen.data(), g.data(),
                       &row_lse);
    EXPECT_EQ(std::vector<int32_t>(idx.begin() + t * kTopk, idx.begin() + (t + 1) * kTopk),
              chosen);
    double total = 0.0;
    for (float v : p) total += v;
    for (int64_t e = 0; e < kExperts; ++e) expected[row_group[t] * kExperts + e] += p[e] / total;
    expected[2 * kExperts] += static_cast<double>(row_lse) * row_lse;
  }
  testing::expect_close(sums, expected, 1e-6, 1e-6, "load sums");

  RouterBackwardConfig b;
  b.row = c;
  b.balance = true;
  b.balance_weight = 0.1;
  b.z_loss = true;
  b.z_factor = 0.02;
  b.z_tokens = kRows;
  const std::vector<int64_t> counts = {1, 0, 2, 3, 1, 0, 2, 2, 0, 1, 1, 1};  // (2, E)
  const std::vector<uint8_t> keep = {1, 1, 0, 1, 1, 1, 1, 0, 1, 1};
  const std::vector<float> dgates_v = random_floats(kRows * kTopk, 2);
  Tensor dz = Tensor::empty({kRows, kExperts});
  ops::route_backward(Tensor::from_vector({kRows, kTopk}, dgates_v), keep, gates, probs, z,
                      idx.data(), lse, counts, row_group, dz, b);
  const std::vector<float> dz_v = dz.to_vector(), probs_v = probs.to_vector();
  const std::vector<float> gates_v = gates.to_vector(), lse_v = lse.to_vector();
  for (int64_t t = 0; t < kRows; ++t) {
    std::vector<float> row(kExperts);
    router_row_backward(b, dgates_v.data() + t * kTopk, keep.data() + t * kTopk,
                        gates_v.data() + t * kTopk, probs_v.data() + t * kExperts,
                        z_v.data() + t * kExperts, idx.data() + t * kTopk, lse_v[t],
                        counts.data() + row_group[t] * kExperts, row.data());
    EXPECT_EQ(std::vector<float>(dz_v.begin() + t * kExperts, dz_v.begin() + (t + 1) * kExperts),
              row)
        << "row " << t;
  }
}

void expect_error(const std::function<void()>& call, const std::string& words) {
  try {
    call();
    FAIL() << "expected an error containing " << words;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(RoutingOps, BadOperandsAreClearErrors) {
  RouterRowConfig c = sigmoid_config();
  const Tensor z = Tensor::zeros({kRows, kExperts});
  Tensor probs = Tensor::empty({kRows, kExperts}), gates = Tensor::empty({kRows, kTopk});
  std::vector<int32_t> idx(kRows * kTopk);
  c.num_groups = 3;
  c.group_topk = 2;  // top-2 over 2 kept groups of 2: 1 per group
  ops::route_forward(z, Tensor(), probs, idx.data(), gates, Tensor(), c);
  c.group_topk = 3;  // 2 is not a multiple of 3
  expect_error([&] { ops::route_forward(z, Tensor(), probs, idx.data(), gates, Tensor(), c); },
               "ops::route_forward: group-limited routing over 3 groups");
  c.num_groups = 0;
  c.topk = 7;
  expect_error([&] { ops::route_forward(z, Tensor(), probs, idx.data(), gates, Tensor(), c); },
               "ops::route_forward: top-7 of 6 experts");
  c.topk = kTopk;
  std::vector<double> sums(kExperts + 1);
  const std::vector<int32_t> row_group = {0, 1, 0, 0, 0};
  expect_error([&] { ops::route_load_sums(probs, Tensor(), row_group, 1, sums.data(), c); },
               "ops::route_load_sums: row group 1 of 1");
  RouterBackwardConfig b;
  b.row = c;
  b.z_loss = true;
  Tensor dz = Tensor::empty({kRows, kExperts});
  expect_error([&] {
    ops::route_backward(gates, {}, gates, probs, z, idx.data(), Tensor(), {}, {}, dz, b);
  }, "ops::route_backward: the z-loss needs lse");
}

}  // namespace
}  // namespace moefold
