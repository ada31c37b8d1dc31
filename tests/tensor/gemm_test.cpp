#include "tensor/cpu/gemm.h"

#include <gtest/gtest.h>

#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::expect_close;
using moefold::testing::random_floats;

// C (M,N) = alpha·op(A)·op(B) + beta·C in double, with the same strides as the kernel.
std::vector<double> reference_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                                   const std::vector<float>& A, int64_t lda,
                                   const std::vector<float>& B, int64_t ldb, double beta,
                                   const std::vector<float>& C, int64_t ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < K; ++p) {
        const double a = ta ? A[p * lda + i] : A[i * lda + p];
        const double b = tb ? B[j * ldb + p] : B[p * ldb + j];
        sum += a * b;
      }
      out[i * ldc + j] = alpha * sum + beta * C[i * ldc + j];
    }
  }
  return out;
}

TEST(Gemm, AllTransposeCombinationsWithPaddedStrides) {
  const int64_t M = 7, N = 5, K = 9, pad = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
      const auto A = random_floats((ta ? K : M) * lda, 1);
      const auto B = random_floats((tb ? N : K) * ldb, 2);
      auto C = random_floats(M * ldc, 3);
      const auto expected = reference_gemm(ta, tb, M, N, K, 0.7, A, lda, B, ldb, 0.3, C, ldc);
      gemm(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, 0.3f, C.data(), ldc);
      expect_close(C, expected, 1e-5, 1e-5, "gemm");
    }
  }
}

TEST(Gemm, EmptyReductionScalesByBeta) {
  std::vector<float> C = {1.0f, -2.0f, 3.0f, 4.0f};
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, -1.0f, 1.5f, 2.0f}));
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>(4, 0.0f)));
}

// The linear layers run through the seam (tensor/ops.h); the raw strided GEMM above and the
// peak measurement are the CPU backend's own.
Tensor matrix(int64_t rows, int64_t cols, const std::vector<float>& values) {
  return Tensor::from_vector({rows, cols}, values);
}

TEST(Linear, ForwardAndBackwardMatchDoubleReference) {
  const int64_t N = 6, I = 11, O = 4;
  const auto x = random_floats(N * I, 10);
  const auto w = random_floats(O * I, 11);
  const auto dy = random_floats(N * O, 12);

  const Tensor y = Tensor::zeros({N, O});
  ops::linear_forward(matrix(N, I, x), matrix(O, I, w), y);
  expect_close(y.to_vector(),
               reference_gemm(false, true, N, O, I, 1, x, I, w, I, 0, y.to_vector(), O), 1e-5,
               1e-5, "y");

  const auto dx_before = random_floats(N * I, 13);
  const Tensor dx = matrix(N, I, dx_before);
  ops::linear_backward_dx(matrix(N, O, dy), matrix(O, I, w), dx, /*accumulate=*/true);
  expect_close(dx.to_vector(),
               reference_gemm(false, false, N, I, O, 1, dy, O, w, I, 1, dx_before, I), 1e-5, 1e-5,
               "dx accumulate");
  ops::linear_backward_dx(matrix(N, O, dy), matrix(O, I, w), dx, /*accumulate=*/false);
  expect_close(dx.to_vector(),
               reference_gemm(false, false, N, I, O, 1, dy, O, w, I, 0, dx_before, I), 1e-5, 1e-5,
               "dx");

  const auto dw_before = random_floats(O * I, 14);
  const Tensor dw = matrix(O, I, dw_before);
  ops::linear_backward_dw(matrix(N, O, dy), matrix(N, I, x), dw);
  expect_close(dw.to_vector(),
               reference_gemm(true, false, O, I, N, 1, dy, O, x, I, 1, dw_before, I), 1e-5, 1e-5,
               "dw");
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t N = 3, I = 5, O = 4;
  auto x = random_floats(N * I, 20);
  auto w = random_floats(O * I, 21);
  const auto dy = random_floats(N * O, 22);
  auto loss = [&] {
    const Tensor y = Tensor::zeros({N, O});
    ops::linear_forward(matrix(N, I, x), matrix(O, I, w), y);
    return moefold::testing::weighted_sum(dy, y.to_vector());
  };
  const Tensor dx = Tensor::zeros({N, I}), dw = Tensor::zeros({O, I});
  ops::linear_backward_dx(matrix(N, O, dy), matrix(O, I, w), dx, false);
  ops::linear_backward_dw(matrix(N, O, dy), matrix(N, I, x), dw);
  moefold::testing::expect_gradient_matches(x, dx.to_vector(), loss, 1e-2f, 2e-3, 1e-3, "dx");
  moefold::testing::expect_gradient_matches(w, dw.to_vector(), loss, 1e-2f, 2e-3, 1e-3, "dw");
}

TEST(GroupedLinear, MatchesPerGroupLinearIncludingEmptyGroups) {
  const int64_t G = 5, I = 6, O = 3;
  // Groups 0, 2 and 4 are empty (first, middle and last).
  const std::vector<int64_t> offsets = {0, 0, 4, 4, 9, 9};
  const int64_t N = offsets[G];
  const auto x = random_floats(N * I, 30);
  const auto w = random_floats(G * O * I, 31);
  const auto dy = random_floats(N * O, 32);

  const Tensor weights = Tensor::from_vector({G, O, I}, w);
  const Tensor y_t = Tensor::zeros({N, O}), dx_t = Tensor::zeros({N, I});
  const Tensor dw_t = Tensor::from_vector({G, O, I}, std::vector<float>(G * O * I, 0.5f));
  ops::grouped_linear_forward(matrix(N, I, x), weights, y_t, offsets);
  ops::grouped_linear_backward_dx(matrix(N, O, dy), weights, dx_t, offsets, false);
  ops::grouped_linear_backward_dw(matrix(N, O, dy), matrix(N, I, x), dw_t, offsets);
  const std::vector<float> y = y_t.to_vector(), dx = dx_t.to_vector(), dw = dw_t.to_vector();

  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    const std::vector<float> xg(x.begin() + begin * I, x.begin() + (begin + rows) * I);
    const std::vector<float> wg(w.begin() + g * O * I, w.begin() + (g + 1) * O * I);
    const std::vector<float> dyg(dy.begin() + begin * O, dy.begin() + (begin + rows) * O);
    const std::vector<float> yg(y.begin() + begin * O, y.begin() + (begin + rows) * O);
    const std::vector<float> dxg(dx.begin() + begin * I, dx.begin() + (begin + rows) * I);
    const std::vector<float> dwg(dw.begin() + g * O * I, dw.begin() + (g + 1) * O * I);
    expect_close(yg, reference_gemm(false, true, rows, O, I, 1, xg, I, wg, I, 0, yg, O), 1e-5,
                 1e-5, "grouped y");
    expect_close(dxg, reference_gemm(false, false, rows, I, O, 1, dyg, O, wg, I, 0, dxg, I), 1e-5,
                 1e-5, "grouped dx");
    const std::vector<float> half(O * I, 0.5f);
    expect_close(dwg, reference_gemm(true, false, O, I, rows, 1, dyg, O, xg, I, 1, half, I), 1e-5,
                 1e-5, "grouped dw");
  }
}

TEST(GroupedLinear, BackwardDxAccumulates) {
  const int64_t G = 2, I = 3, O = 2;
  const std::vector<int64_t> offsets = {0, 2, 3};
  const Tensor w = Tensor::from_vector({G, O, I}, random_floats(G * O * I, 40));
  const Tensor dy = matrix(3, O, random_floats(3 * O, 41));
  const Tensor fresh = Tensor::zeros({3, I});
  const Tensor accumulated = matrix(3, I, std::vector<float>(3 * I, 1.0f));
  ops::grouped_linear_backward_dx(dy, w, fresh, offsets, false);
  ops::grouped_linear_backward_dx(dy, w, accumulated, offsets, true);
  const std::vector<float> want = fresh.to_vector(), got = accumulated.to_vector();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i] + 1.0f);
}

TEST(Gemm, MeasuredPeakIsPositive) {
  set_blas_threads(1);
  EXPECT_GT(measure_sgemm_gflops(64, 0.01), 0.0);
}

}  // namespace
}  // namespace moefold::cpu
