#include "tensor/cpu/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;

TEST(SwiGlu, ForwardMatchesDoubleReference) {
  const int64_t n = 101;
  const auto gate = random_floats(n, 1, -6.0f, 6.0f);
  const auto up = random_floats(n, 2, -2.0f, 2.0f);
  std::vector<float> out(n);
  swiglu_forward(gate.data(), up.data(), out.data(), n);
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    expected[i] = g / (1.0 + std::exp(-g)) * up[i];
  }
  moefold::testing::expect_close(out, expected, 1e-6, 1e-5, "out");
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  const int64_t n = 40;
  auto gate = random_floats(n, 3, -5.0f, 5.0f);
  auto up = random_floats(n, 4, -2.0f, 2.0f);
  const auto dout = random_floats(n, 5);
  auto loss = [&] {
    std::vector<float> out(n);
    swiglu_forward(gate.data(), up.data(), out.data(), n);
    return moefold::testing::weighted_sum(dout, out);
  };
  std::vector<float> dgate(n), dup(n);
  swiglu_backward(dout.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
  moefold::testing::expect_gradient_matches(gate, dgate, loss, 1e-2f, 1e-3, 1e-3, "dgate");
  moefold::testing::expect_gradient_matches(up, dup, loss, 1e-2f, 1e-3, 1e-3, "dup");

  // In place: gradients written over their inputs.
  auto gate_copy = gate, up_copy = up;
  swiglu_backward(dout.data(), gate_copy.data(), up_copy.data(), gate_copy.data(), up_copy.data(),
                  n);
  EXPECT_EQ(gate_copy, dgate);
  EXPECT_EQ(up_copy, dup);
}

}  // namespace
}  // namespace moefold::cpu
