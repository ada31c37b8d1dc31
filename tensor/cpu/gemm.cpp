#include "tensor/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <vector>

#include "tensor/check.h"

namespace moefold::cpu {
namespace {

blasint as_blas_int(int64_t value) {
  MOEFOLD_CHECK(value >= 0 && value <= INT_MAX, "BLAS dimension out of range: " << value);
  return static_cast<blasint>(value);
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    // BLAS would scale C by beta; do it here so that empty reductions behave the same.
    for (int64_t i = 0; i < M; ++i) {
      float* row = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, as_blas_int(M), as_blas_int(N), as_blas_int(K),
              alpha, A, as_blas_int(lda), B, as_blas_int(ldb), beta, C, as_blas_int(ldc));
}

void linear_forward(const float* x_NI, const float* w_OI, float* y_NO, int64_t N, int64_t I,
                    int64_t O) {
  gemm(false, true, N, O, I, 1.0f, x_NI, I, w_OI, I, 0.0f, y_NO, O);
}

void linear_backward_dx(const float* dy_NO, const float* w_OI, float* dx_NI, int64_t N, int64_t I,
                        int64_t O, bool accumulate) {
  gemm(false, false, N, I, O, 1.0f, dy_NO, O, w_OI, I, accumulate ? 1.0f : 0.0f, dx_NI, I);
}

void linear_backward_dw(const float* dy_NO, const float* x_NI, float* dw_OI, int64_t N, int64_t I,
                        int64_t O) {
  gemm(true, false, O, I, N, 1.0f, dy_NO, O, x_NI, I, 1.0f, dw_OI, I);
}

static void check_offsets(const int64_t* offsets, int64_t G) {
  MOEFOLD_CHECK(offsets[0] == 0, "grouped GEMM offsets must start at 0");
  for (int64_t g = 0; g < G; ++g) {
    MOEFOLD_CHECK(offsets[g + 1] >= offsets[g], "grouped GEMM offsets decrease at group " << g);
  }
}

void grouped_linear_forward(const float* x_NI, const float* w_GOI, float* y_NO,
                            const int64_t* offsets, int64_t G, int64_t I, int64_t O) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows == 0) continue;
    linear_forward(x_NI + begin * I, w_GOI + g * O * I, y_NO + begin * O, rows, I, O);
  }
}

void grouped_linear_backward_dx(const float* dy_NO, const float* w_GOI, float* dx_NI,
                                const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                bool accumulate) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows == 0) continue;
    linear_backward_dx(dy_NO + begin * O, w_GOI + g * O * I, dx_NI + begin * I, rows, I, O,
                       accumulate);
  }
}

void grouped_linear_backward_dw(const float* dy_NO, const float* x_NI, float* dw_GOI,
                                const int64_t* offsets, int64_t G, int64_t I, int64_t O) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows == 0) continue;
    linear_backward_dw(dy_NO + begin * O, x_NI + begin * I, dw_GOI + g * O * I, rows, I, O);
  }
}

void set_blas_threads(int threads) {
  MOEFOLD_CHECK(threads >= 1, "BLAS thread count must be positive, got " << threads);
  openblas_set_num_threads(threads);
}

double measure_sgemm_gflops(int n, double seconds) {
  MOEFOLD_CHECK(n > 0 && seconds > 0);
  const size_t elements = static_cast<size_t>(n) * n;
  std::vector<float> a(elements), b(elements), c(elements, 0.0f);
  // Non-trivial values so no special-casing of zeros can flatter the figure.
  for (size_t i = 0; i < elements; ++i) {
    a[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
    b[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
  }
  const double flops = 2.0 * n * static_cast<double>(n) * n;
  using Clock = std::chrono::steady_clock;
  gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // warm-up
  double best = 0.0;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, flops / elapsed * 1e-9);
  } while (std::chrono::duration<double>(Clock::now() - start).count() < seconds);
  return best;
}

}  // namespace moefold::cpu
