// The row-major → column-major mapping of every cuBLAS GEMM the CUDA backend issues
// (tensor/blas_layout.h), executed by a column-major reference GEMM with BLAS's own meaning of
// its arguments, against the row-major definition: every transpose pair, with padded leading
// dimensions.
#include "tensor/blas_layout.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

// BLAS's gemm, column-major: C(m,n) = op(X)(m,k)·op(Y)(k,n) + C, element (i,j) at i + j·ld.
void column_major_reference(const ColumnMajorGemm& g, const float* X, const float* Y, float* C) {
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const float x = g.trans_first ? X[p + i * g.ld_first] : X[i + p * g.ld_first];
        const float y = g.trans_second ? Y[j + p * g.ld_second] : Y[p + j * g.ld_second];
        acc += static_cast<double>(x) * y;
      }
      C[i + j * g.ldc] += static_cast<float>(acc);
    }
  }
}

TEST(BlasLayout, ColumnMajorCallComputesTheRowMajorProduct) {
  const int64_t M = 5, N = 3, K = 4, pad = 2;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      // Row-major A is (M,K), or (K,M) when transposed; B is (K,N) or (N,K); C is (M,N).
      const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
      const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
      const auto A = testing::random_floats(a_rows * lda, 1);
      const auto B = testing::random_floats(b_rows * ldb, 2);
      std::vector<float> C(M * ldc, 0.0f);
      column_major_reference(column_major_gemm(trans_a, trans_b, M, N, K, lda, ldb, ldc),
                             B.data(), A.data(), C.data());
      for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
          double expected = 0.0;
          for (int64_t p = 0; p < K; ++p) {
            const double a = trans_a ? A[p * lda + i] : A[i * lda + p];
            const double b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
            expected += a * b;
          }
          EXPECT_NEAR(C[i * ldc + j], expected, 1e-5)
              << "trans_a " << trans_a << " trans_b " << trans_b << " at (" << i << "," << j
              << ")";
        }
        for (int64_t j = N; j < ldc; ++j) EXPECT_EQ(C[i * ldc + j], 0.0f) << "padding written";
      }
    }
  }
}

}  // namespace
}  // namespace moefold
