// RMSNorm through the seam (tensor/ops.h), against a float64 reference and finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

// y (N,H) and rstd (N) of rmsnorm(x)·w.
struct Normed {
  Tensor y, rstd;
};

Normed rmsnorm(const std::vector<float>& x, const std::vector<float>& w, int64_t N, int64_t H,
               float eps) {
  Normed out{Tensor::zeros({N, H}), Tensor::zeros({N})};
  ops::rmsnorm_forward(Tensor::from_vector({N, H}, x), Tensor::from_vector({H}, w), out.y,
                       out.rstd, eps);
  return out;
}

TEST(RmsNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 5, H = 37;
  const float eps = 1e-5f;
  const auto x = random_floats(N * H, 1, -2.0f, 2.0f);
  const auto w = random_floats(H, 2, 0.5f, 1.5f);
  const Normed normed = rmsnorm(x, w, N, H, eps);
  std::vector<double> expected_y(N * H), expected_rstd(N);
  for (int64_t n = 0; n < N; ++n) {
    double sum_sq = 0.0;
    for (int64_t h = 0; h < H; ++h) sum_sq += static_cast<double>(x[n * H + h]) * x[n * H + h];
    expected_rstd[n] = 1.0 / std::sqrt(sum_sq / H + eps);
    for (int64_t h = 0; h < H; ++h) expected_y[n * H + h] = x[n * H + h] * expected_rstd[n] * w[h];
  }
  testing::expect_close(normed.y.to_vector(), expected_y, 1e-6, 1e-5, "y");
  testing::expect_close(normed.rstd.to_vector(), expected_rstd, 1e-6, 1e-5, "rstd");
}

TEST(RmsNorm, InPlaceForwardEqualsOutOfPlace) {
  const int64_t N = 3, H = 8;
  const auto x = random_floats(N * H, 3);
  const auto w = random_floats(H, 4);
  const Normed out_of_place = rmsnorm(x, w, N, H, 1e-5f);
  const Tensor in_place = Tensor::from_vector({N, H}, x);
  ops::rmsnorm_forward(in_place, Tensor::from_vector({H}, w), in_place, Tensor::zeros({N}), 1e-5f);
  EXPECT_EQ(in_place.to_vector(), out_of_place.y.to_vector());
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3, H = 6;
  auto x = random_floats(N * H, 5, -2.0f, 2.0f);
  auto w = random_floats(H, 6, 0.5f, 1.5f);
  const auto dy = random_floats(N * H, 7);
  auto loss = [&] { return testing::weighted_sum(dy, rmsnorm(x, w, N, H, 1e-5f).y.to_vector()); };
  const Normed normed = rmsnorm(x, w, N, H, 1e-5f);
  const Tensor dx = Tensor::zeros({N, H}), dw = Tensor::zeros({H});
  ops::rmsnorm_backward(Tensor::from_vector({N, H}, dy), Tensor::from_vector({N, H}, x),
                        Tensor::from_vector({H}, w), normed.rstd, dx, dw, false);
  testing::expect_gradient_matches(x, dx.to_vector(), loss, 1e-3f, 2e-3, 2e-3, "dx");
  testing::expect_gradient_matches(w, dw.to_vector(), loss, 1e-3f, 2e-3, 2e-3, "dw");
}

TEST(RmsNorm, BackwardAccumulatesDxAndDw) {
  const int64_t N = 2, H = 4;
  const Tensor x = Tensor::from_vector({N, H}, random_floats(N * H, 8));
  const Tensor w = Tensor::from_vector({H}, random_floats(H, 9));
  const Tensor dy = Tensor::from_vector({N, H}, random_floats(N * H, 10));
  const Tensor y = Tensor::zeros({N, H}), rstd = Tensor::zeros({N});
  ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
  const Tensor dx = Tensor::zeros({N, H}), dw = Tensor::zeros({H});
  const Tensor dx_acc = Tensor::from_vector({N, H}, std::vector<float>(N * H, 2.0f));
  const Tensor dw_acc = Tensor::from_vector({H}, std::vector<float>(H, 3.0f));
  ops::rmsnorm_backward(dy, x, w, rstd, dx, dw, false);
  ops::rmsnorm_backward(dy, x, w, rstd, dx_acc, dw_acc, true);
  const std::vector<float> want_dx = dx.to_vector(), got_dx = dx_acc.to_vector();
  const std::vector<float> want_dw = dw.to_vector(), got_dw = dw_acc.to_vector();
  for (int64_t i = 0; i < N * H; ++i) EXPECT_FLOAT_EQ(got_dx[i], want_dx[i] + 2.0f);
  for (int64_t h = 0; h < H; ++h) EXPECT_FLOAT_EQ(got_dw[h], want_dw[h] + 3.0f);
}

}  // namespace
}  // namespace moefold
