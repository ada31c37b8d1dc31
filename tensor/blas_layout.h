// moefold's matrices are row-major; cuBLAS's are column-major, where a row-major (M,N) matrix
// with leading dimension ld reads as its (N,M) transpose with the same ld. So the row-major
// C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B goes first, A second, and the sizes
// swap. A pure function, so that the CPU tests check the mapping every cuBLAS call of the CUDA
// backend uses (tensor/cuda/gemm.cu) against a column-major reference GEMM.
#pragma once

#include <cstdint>

namespace moefold {

// The column-major call C(m,n) = op(first)·op(second), in cublasGemmEx's argument order.
struct ColumnMajorGemm {
  bool trans_first, trans_second;
  int64_t m, n, k;
  int64_t ld_first, ld_second, ldc;  // of B and of A, then of C
};

inline ColumnMajorGemm column_major_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N,
                                         int64_t K, int64_t lda, int64_t ldb, int64_t ldc) {
  return {trans_b, trans_a, N, M, K, ldb, lda, ldc};
}

}  // namespace moefold
