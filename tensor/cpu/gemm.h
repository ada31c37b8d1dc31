// Dense and grouped matrix products through cblas (OpenBLAS), row-major. Transposes are cblas
// flags, never copies. Linear weights are stored [out, in] (PyTorch): y = x Wᵀ.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// C (M,N) = alpha · op(A) (M,K) · op(B) (K,N) + beta · C. op(X) = Xᵀ when trans_x.
// lda/ldb/ldc are the row strides of A, B, C as stored (row-major).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc);

// y (N,O) = x (N,I) · wᵀ, w (O,I). y is overwritten.
void linear_forward(const float* x_NI, const float* w_OI, float* y_NO, int64_t N, int64_t I,
                    int64_t O);
// dx (N,I) = dy (N,O) · w (O,I); overwritten, or added to dx when accumulate.
void linear_backward_dx(const float* dy_NO, const float* w_OI, float* dx_NI, int64_t N, int64_t I,
                        int64_t O, bool accumulate);
// dw (O,I) += dyᵀ (O,N) · x (N,I). Always accumulates (gradient accumulation over micro-batches).
void linear_backward_dw(const float* dy_NO, const float* x_NI, float* dw_OI, int64_t N, int64_t I,
                        int64_t O);

// Grouped linear for experts: the rows of x are sorted by group; group g owns rows
// [offsets[g], offsets[g+1]) and uses w[g] (O,I). offsets has G+1 entries, offsets[0] == 0,
// non-decreasing; N = offsets[G]. Groups with zero rows are allowed.
// y (N,O) overwritten.
void grouped_linear_forward(const float* x_NI, const float* w_GOI, float* y_NO,
                            const int64_t* offsets, int64_t G, int64_t I, int64_t O);
// dx (N,I) = per group dy · w[g]; overwritten, or added when accumulate.
void grouped_linear_backward_dx(const float* dy_NO, const float* w_GOI, float* dx_NI,
                                const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                bool accumulate);
// dw[g] (O,I) += dy[rows of g]ᵀ · x[rows of g]. Always accumulates; empty groups add nothing.
void grouped_linear_backward_dw(const float* dy_NO, const float* x_NI, float* dw_GOI,
                                const int64_t* offsets, int64_t G, int64_t I, int64_t O);

// Number of threads OpenBLAS uses for every later call in this process.
void set_blas_threads(int threads);
// Repeats an (n,n,n) sgemm for about `seconds` with the current BLAS thread count and returns
// the best observed GFLOP/s (2n³ flops per call): the machine's peak for MFU.
double measure_sgemm_gflops(int n, double seconds);

}  // namespace moefold::cpu
