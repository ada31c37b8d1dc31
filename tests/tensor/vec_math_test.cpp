#include "tensor/cpu/vec_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

TEST(VecMath, ExpApproxIsWithinAFewUlpOverTheFloatRange) {
  double worst = 0.0;
  for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(exp_approx(x) - exact) / exact);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(exp_approx(0.0f), 1.0f);
  EXPECT_EQ(exp_approx(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(exp_approx(-1000.0f), 0.0f);
}

TEST(VecMath, ReductionsMatchDoubleReferenceForOddLengths) {
  for (int64_t n : {1, 15, 16, 17, 100}) {
    const auto a = moefold::testing::random_floats(n, 1, -3.0f, 3.0f);
    const auto b = moefold::testing::random_floats(n, 2);
    double max = -1e300, dot_ref = 0.0, exp_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      max = std::max<double>(max, a[i]);
      dot_ref += static_cast<double>(a[i]) * b[i];
    }
    std::vector<float> out(n);
    for (int64_t i = 0; i < n; ++i) exp_sum += std::exp(a[i] - max);
    EXPECT_EQ(max_value(a.data(), n), max);
    EXPECT_NEAR(dot(a.data(), b.data(), n), dot_ref, 1e-5 * n);
    EXPECT_NEAR(exp_shifted_sum(a.data(), static_cast<float>(max), out.data(), n), exp_sum,
                1e-6 * n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], std::exp(a[i] - max), 1e-6);
  }
  EXPECT_EQ(max_value(nullptr, 0), -std::numeric_limits<float>::infinity());
}

}  // namespace
}  // namespace moefold::cpu
