#include "tensor/cpu/rmsnorm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;

TEST(RmsNorm, ForwardMatchesDoubleReference) {
  const int64_t N = 5, H = 37;
  const float eps = 1e-5f;
  const auto x = random_floats(N * H, 1, -2.0f, 2.0f);
  const auto w = random_floats(H, 2, 0.5f, 1.5f);
  std::vector<float> y(N * H), rstd(N);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, eps);
  std::vector<double> expected_y(N * H), expected_rstd(N);
  for (int64_t n = 0; n < N; ++n) {
    double sum_sq = 0.0;
    for (int64_t h = 0; h < H; ++h) sum_sq += static_cast<double>(x[n * H + h]) * x[n * H + h];
    expected_rstd[n] = 1.0 / std::sqrt(sum_sq / H + eps);
    for (int64_t h = 0; h < H; ++h) expected_y[n * H + h] = x[n * H + h] * expected_rstd[n] * w[h];
  }
  moefold::testing::expect_close(y, expected_y, 1e-6, 1e-5, "y");
  moefold::testing::expect_close(rstd, expected_rstd, 1e-6, 1e-5, "rstd");
}

TEST(RmsNorm, InPlaceForwardEqualsOutOfPlace) {
  const int64_t N = 3, H = 8;
  auto x = random_floats(N * H, 3);
  const auto w = random_floats(H, 4);
  std::vector<float> y(N * H), rstd(N), rstd2(N);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
  rmsnorm_forward(x.data(), w.data(), x.data(), rstd2.data(), N, H, 1e-5f);
  EXPECT_EQ(x, y);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3, H = 6;
  auto x = random_floats(N * H, 5, -2.0f, 2.0f);
  auto w = random_floats(H, 6, 0.5f, 1.5f);
  const auto dy = random_floats(N * H, 7);
  auto loss = [&] {
    std::vector<float> y(N * H), rstd(N);
    rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
    return moefold::testing::weighted_sum(dy, y);
  };
  std::vector<float> y(N * H), rstd(N), dx(N * H), dw(H, 0.0f);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), N, H, false);
  moefold::testing::expect_gradient_matches(x, dx, loss, 1e-3f, 2e-3, 2e-3, "dx");
  moefold::testing::expect_gradient_matches(w, dw, loss, 1e-3f, 2e-3, 2e-3, "dw");
}

TEST(RmsNorm, BackwardAccumulatesDxAndDw) {
  const int64_t N = 2, H = 4;
  const auto x = random_floats(N * H, 8);
  const auto w = random_floats(H, 9);
  const auto dy = random_floats(N * H, 10);
  std::vector<float> y(N * H), rstd(N);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
  std::vector<float> dx(N * H), dw(H, 0.0f), dx_acc(N * H, 2.0f), dw_acc(H, 3.0f);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), N, H, false);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx_acc.data(), dw_acc.data(), N, H,
                   true);
  for (int64_t i = 0; i < N * H; ++i) EXPECT_FLOAT_EQ(dx_acc[i], dx[i] + 2.0f);
  for (int64_t h = 0; h < H; ++h) EXPECT_FLOAT_EQ(dw_acc[h], dw[h] + 3.0f);
}

}  // namespace
}  // namespace moefold::cpu
