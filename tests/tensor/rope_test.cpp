// RoPE through the seam (tensor/ops.h), against MODEL.md's formula in float64 and finite
// differences.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

// x (N, heads, d) as a tensor.
Tensor rows(const std::vector<float>& x, const std::vector<int32_t>& pos, int64_t heads,
            int64_t d) {
  return Tensor::from_vector({static_cast<int64_t>(pos.size()), heads, d}, x);
}

std::vector<float> rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                        int64_t heads, int64_t d, float base) {
  const Tensor y = rows(std::vector<float>(x.size()), pos, heads, d);
  ops::rope_forward(rows(x, pos, heads, d), y, pos, heads, d, base);
  return y.to_vector();
}

// MODEL.md's rotate-half formula in double.
std::vector<double> reference_rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                                   int64_t heads, int64_t d, double base) {
  std::vector<double> out(x.size());
  const int64_t half = d / 2;
  for (size_t n = 0; n < pos.size(); ++n) {
    for (int64_t h = 0; h < heads; ++h) {
      const size_t row = (n * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const double theta = pos[n] * std::pow(base, -2.0 * i / d);
        const double x1 = x[row + i], x2 = x[row + i + half];
        out[row + i] = x1 * std::cos(theta) - x2 * std::sin(theta);
        out[row + i + half] = x2 * std::cos(theta) + x1 * std::sin(theta);
      }
    }
  }
  return out;
}

TEST(Rope, ForwardMatchesDoubleReferenceAtCustomPositions) {
  const int64_t heads = 3, d = 8;
  const std::vector<int32_t> pos = {0, 1, 7, 130, 4095, 2};
  const auto x = random_floats(pos.size() * heads * d, 1);
  const std::vector<float> y = rope(x, pos, heads, d, 10000.0f);
  testing::expect_close(y, reference_rope(x, pos, heads, d, 10000.0), 1e-5, 1e-5, "y");
}

TEST(Rope, BatchOfRepeatedPositionsMatchesDoubleReference) {
  // Two sequences of positions 12..31: dense positions take the shared-table path.
  const int64_t heads = 2, d = 16;
  std::vector<int32_t> pos;
  for (int b = 0; b < 2; ++b) {
    for (int32_t p = 12; p < 32; ++p) pos.push_back(p);
  }
  const auto x = random_floats(pos.size() * heads * d, 5);
  const std::vector<float> y = rope(x, pos, heads, d, 10000.0f);
  testing::expect_close(y, reference_rope(x, pos, heads, d, 10000.0), 1e-5, 1e-5, "y");
}

TEST(Rope, PositionZeroIsIdentityAndInPlaceWorks) {
  const int64_t heads = 2, d = 4;
  const std::vector<int32_t> pos = {0, 5};
  const auto x = random_floats(pos.size() * heads * d, 2);
  const std::vector<float> y = rope(x, pos, heads, d, 500.0f);
  for (int64_t i = 0; i < heads * d; ++i) EXPECT_EQ(y[i], x[i]);
  const Tensor in_place = rows(x, pos, heads, d);
  ops::rope_forward(in_place, in_place, pos, heads, d, 500.0f);
  EXPECT_EQ(in_place.to_vector(), y);
}

TEST(Rope, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  const int64_t heads = 2, d = 6;
  const std::vector<int32_t> pos = {3, 11, 1};
  auto x = random_floats(pos.size() * heads * d, 3);
  const auto dy = random_floats(x.size(), 4);
  auto loss = [&] { return testing::weighted_sum(dy, rope(x, pos, heads, d, 10000.0f)); };
  const Tensor dx = rows(std::vector<float>(x.size()), pos, heads, d);
  ops::rope_backward(rows(dy, pos, heads, d), dx, pos, heads, d, 10000.0f);
  testing::expect_gradient_matches(x, dx.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dx");

  const Tensor round_trip = rows(rope(x, pos, heads, d, 10000.0f), pos, heads, d);
  ops::rope_backward(round_trip, round_trip, pos, heads, d, 10000.0f);
  testing::expect_close(round_trip.to_vector(), testing::to_double(x), 1e-6, 1e-6, "inverse");
}

}  // namespace
}  // namespace moefold
