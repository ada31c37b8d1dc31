// Dense and grouped GEMMs of the CUDA backend through cuBLAS. moefold's tensors are row-major;
// cuBLAS is column-major, where a row-major (M,N) matrix reads as its (N,M) transpose, so
// C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ with A and B swapped.
#include <climits>
#include <cstdint>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"

namespace moefold::cuda {
namespace {

int as_blas_int(int64_t value) {
  MOEFOLD_CHECK(value >= 0 && value <= INT_MAX, "cuBLAS dimension out of range: " << value);
  return static_cast<int>(value);
}

void check_offsets(const int64_t* offsets, int64_t G) {
  MOEFOLD_CHECK(offsets[0] == 0, "grouped GEMM offsets must start at 0");
  for (int64_t g = 0; g < G; ++g) {
    MOEFOLD_CHECK(offsets[g + 1] >= offsets[g], "grouped GEMM offsets decrease at group " << g);
  }
}

}  // namespace

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                       float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty reduction: C = beta·C, as the CPU backend does
    if (beta == 0.0f) {
      MOEFOLD_CUDA_CHECK(cudaMemset2DAsync(C, ldc * sizeof(float), 0, N * sizeof(float), M,
                                           stream_));
    } else if (beta != 1.0f) {
      for (int64_t i = 0; i < M; ++i) scale(C + i * ldc, beta, N);
    }
    return;
  }
  MOEFOLD_CUBLAS_CHECK(cublasSgemm(cublas_, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, as_blas_int(N),
                                   as_blas_int(M), as_blas_int(K), &alpha, B, as_blas_int(ldb), A,
                                   as_blas_int(lda), &beta, C, as_blas_int(ldc)));
}

void CudaBackend::linear_forward(const float* x, const float* w, float* y, int64_t N, int64_t I,
                                 int64_t O, bool accumulate) {
  gemm(false, true, N, O, I, 1.0f, x, I, w, I, accumulate ? 1.0f : 0.0f, y, O);
}

void CudaBackend::linear_backward_dx(const float* dy, const float* w, float* dx, int64_t N,
                                     int64_t I, int64_t O, bool accumulate) {
  gemm(false, false, N, I, O, 1.0f, dy, O, w, I, accumulate ? 1.0f : 0.0f, dx, I);
}

void CudaBackend::linear_backward_dw(const float* dy, const float* x, float* dw, int64_t N,
                                     int64_t I, int64_t O) {
  gemm(true, false, O, I, N, 1.0f, dy, O, x, I, 1.0f, dw, I);
}

// One cuBLAS call per non-empty expert, all on the stream (the offsets are on the host already,
// so no device-side pointer arrays are needed).
void CudaBackend::grouped_linear_forward(const float* x, const float* w, float* y,
                                         const int64_t* offsets, int64_t G, int64_t I,
                                         int64_t O) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) linear_forward(x + begin * I, w + g * O * I, y + begin * O, rows, I, O, false);
  }
}

void CudaBackend::grouped_linear_backward_dx(const float* dy, const float* w, float* dx,
                                             const int64_t* offsets, int64_t G, int64_t I,
                                             int64_t O, bool accumulate) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) {
      linear_backward_dx(dy + begin * O, w + g * O * I, dx + begin * I, rows, I, O, accumulate);
    }
  }
}

void CudaBackend::grouped_linear_backward_dw(const float* dy, const float* x, float* dw,
                                             const int64_t* offsets, int64_t G, int64_t I,
                                             int64_t O) {
  check_offsets(offsets, G);
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) linear_backward_dw(dy + begin * O, x + begin * I, dw + g * O * I, rows, I, O);
  }
}

double CudaBackend::measure_gemm_flops(int n, double seconds) {
  MOEFOLD_CHECK(n > 0 && seconds > 0);
  const size_t elements = static_cast<size_t>(n) * n;
  Scratch a(*this, elements * sizeof(float)), b(*this, elements * sizeof(float));
  Scratch c(*this, elements * sizeof(float));
  fill(a.as<float>(), 0.5f, static_cast<int64_t>(elements));
  fill(b.as<float>(), -0.25f, static_cast<int64_t>(elements));
  cudaEvent_t start, stop;
  MOEFOLD_CUDA_CHECK(cudaEventCreate(&start));
  MOEFOLD_CUDA_CHECK(cudaEventCreate(&stop));
  const double flops = 2.0 * n * static_cast<double>(n) * n;
  double best = 0.0, elapsed_total = 0.0;
  gemm(false, false, n, n, n, 1.0f, a.as<float>(), n, b.as<float>(), n, 0.0f, c.as<float>(), n);
  do {
    MOEFOLD_CUDA_CHECK(cudaEventRecord(start, stream_));
    gemm(false, false, n, n, n, 1.0f, a.as<float>(), n, b.as<float>(), n, 0.0f, c.as<float>(),
         n);
    MOEFOLD_CUDA_CHECK(cudaEventRecord(stop, stream_));
    MOEFOLD_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    MOEFOLD_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    elapsed_total += ms * 1e-3;
    if (ms > 0.0f) best = std::max(best, flops / (ms * 1e-3));
  } while (elapsed_total < seconds);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace moefold::cuda
