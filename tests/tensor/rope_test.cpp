#include "tensor/cpu/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;

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
  std::vector<float> y(x.size());
  rope_forward(x.data(), y.data(), pos.data(), pos.size(), heads, d, 10000.0f);
  moefold::testing::expect_close(y, reference_rope(x, pos, heads, d, 10000.0), 1e-5, 1e-5, "y");
}

TEST(Rope, BatchOfRepeatedPositionsMatchesDoubleReference) {
  // Two sequences of positions 12..31: dense positions take the shared-table path.
  const int64_t heads = 2, d = 16;
  std::vector<int32_t> pos;
  for (int b = 0; b < 2; ++b) {
    for (int32_t p = 12; p < 32; ++p) pos.push_back(p);
  }
  const auto x = random_floats(pos.size() * heads * d, 5);
  std::vector<float> y(x.size());
  rope_forward(x.data(), y.data(), pos.data(), pos.size(), heads, d, 10000.0f);
  moefold::testing::expect_close(y, reference_rope(x, pos, heads, d, 10000.0), 1e-5, 1e-5, "y");
}

TEST(Rope, PositionZeroIsIdentityAndInPlaceWorks) {
  const int64_t heads = 2, d = 4;
  const std::vector<int32_t> pos = {0, 5};
  auto x = random_floats(pos.size() * heads * d, 2);
  std::vector<float> y(x.size());
  rope_forward(x.data(), y.data(), pos.data(), pos.size(), heads, d, 500.0f);
  for (int64_t i = 0; i < heads * d; ++i) EXPECT_EQ(y[i], x[i]);
  rope_forward(x.data(), x.data(), pos.data(), pos.size(), heads, d, 500.0f);
  EXPECT_EQ(x, y);
}

TEST(Rope, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  const int64_t heads = 2, d = 6;
  const std::vector<int32_t> pos = {3, 11, 1};
  auto x = random_floats(pos.size() * heads * d, 3);
  const auto dy = random_floats(x.size(), 4);
  auto loss = [&] {
    std::vector<float> y(x.size());
    rope_forward(x.data(), y.data(), pos.data(), pos.size(), heads, d, 10000.0f);
    return moefold::testing::weighted_sum(dy, y);
  };
  std::vector<float> dx(x.size());
  rope_backward(dy.data(), dx.data(), pos.data(), pos.size(), heads, d, 10000.0f);
  moefold::testing::expect_gradient_matches(x, dx, loss, 1e-2f, 1e-3, 1e-3, "dx");

  std::vector<float> round_trip(x.size());
  rope_forward(x.data(), round_trip.data(), pos.data(), pos.size(), heads, d, 10000.0f);
  rope_backward(round_trip.data(), round_trip.data(), pos.data(), pos.size(), heads, d, 10000.0f);
  moefold::testing::expect_close(round_trip, moefold::testing::to_double(x), 1e-6, 1e-6,
                                 "inverse");
}

}  // namespace
}  // namespace moefold::cpu
