// SwiGLU through the seam (tensor/ops.h), against a float64 reference and finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

Tensor vec(const std::vector<float>& values) {
  return Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
}

TEST(SwiGlu, ForwardMatchesDoubleReference) {
  const int64_t n = 101;
  const auto gate = random_floats(n, 1, -6.0f, 6.0f);
  const auto up = random_floats(n, 2, -2.0f, 2.0f);
  const Tensor out = Tensor::zeros({n});
  ops::swiglu_forward(vec(gate), vec(up), out);
  std::vector<double> expected(n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    expected[i] = g / (1.0 + std::exp(-g)) * up[i];
  }
  testing::expect_close(out.to_vector(), expected, 1e-6, 1e-5, "out");
}

TEST(SwiGlu, BackwardMatchesFiniteDifferences) {
  const int64_t n = 40;
  auto gate = random_floats(n, 3, -5.0f, 5.0f);
  auto up = random_floats(n, 4, -2.0f, 2.0f);
  const auto dout = random_floats(n, 5);
  auto loss = [&] {
    const Tensor out = Tensor::zeros({n});
    ops::swiglu_forward(vec(gate), vec(up), out);
    return testing::weighted_sum(dout, out.to_vector());
  };
  const Tensor dgate = Tensor::zeros({n}), dup = Tensor::zeros({n});
  ops::swiglu_backward(vec(dout), vec(gate), vec(up), dgate, dup);
  testing::expect_gradient_matches(gate, dgate.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dgate");
  testing::expect_gradient_matches(up, dup.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dup");

  // In place: gradients written over their inputs.
  const Tensor gate_in_place = vec(gate), up_in_place = vec(up);
  ops::swiglu_backward(vec(dout), gate_in_place, up_in_place, gate_in_place, up_in_place);
  EXPECT_EQ(gate_in_place.to_vector(), dgate.to_vector());
  EXPECT_EQ(up_in_place.to_vector(), dup.to_vector());
}

}  // namespace
}  // namespace moefold
