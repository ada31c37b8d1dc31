// Dense and grouped GEMMs of the CUDA backend through cuBLAS, float32 or bf16 (MODEL.md "Mixed
// precision"). moefold's tensors are row-major; cuBLAS is column-major: tensor/blas_layout.h
// maps each call (C = op(A)·op(B) as Cᵀ = op(B)ᵀ·op(A)ᵀ), and the CPU tests check that mapping.
// Each GEMM is one cublasGemmEx, the all-bf16 expert GEMMs one cublasGemmGroupedBatchedEx
// (tensor/grouped_gemm_plan.h), accumulating in float32: bf16 operands with CUBLAS_COMPUTE_32F
// (tensor cores), float32 operands with CUBLAS_COMPUTE_32F_PEDANTIC (strict IEEE float32: no
// TF32, which MODEL.md does not allow, whatever NVIDIA_TF32_OVERRIDE says).
#include <climits>
#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/blas_layout.h"
#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/grouped_gemm_plan.h"

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

cudaDataType blas_type(DType dtype) {
  return dtype == DType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
}

// Elements a row-major (rows, cols) matrix with leading dimension ld spans.
int64_t span_of(int64_t rows, int64_t cols, int64_t ld) { return (rows - 1) * ld + cols; }

}  // namespace

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       GemmInput A, int64_t lda, GemmInput B, int64_t ldb, float beta,
                       GemmOutput C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // an empty reduction: C = beta·C, as the CPU backend does
    if (beta == 0.0f) {
      const size_t element = dtype_size(C.dtype);
      MOEFOLD_CUDA_CHECK(cudaMemset2DAsync(C.data, ldc * element, 0, N * element, M, stream_));
    } else if (beta != 1.0f) {
      MOEFOLD_CHECK(C.dtype == DType::kFloat32, "not supported yet: scaling a bf16 GEMM output");
      for (int64_t i = 0; i < M; ++i) scale(static_cast<float*>(C.data) + i * ldc, beta, N);
    }
    return;
  }
  // cublasGemmEx takes A and B of one type, and a bf16 C only from bf16 inputs: other mixes go
  // through an exact float32 copy of the bf16 operand (widening) or of C (rounded back once).
  if (A.dtype != B.dtype) {
    const bool widen_a = A.dtype == DType::kBFloat16;
    const GemmInput narrow = widen_a ? A : B;
    const int64_t elements = widen_a ? span_of(trans_a ? K : M, trans_a ? M : K, lda)
                                     : span_of(trans_b ? N : K, trans_b ? K : N, ldb);
    Scratch wide(*this, elements * sizeof(float));
    widen_bf16(static_cast<const uint16_t*>(narrow.data), wide.as<float>(), elements);
    gemm(trans_a, trans_b, M, N, K, alpha, widen_a ? f32_in(wide.as<float>()) : A, lda,
         widen_a ? B : f32_in(wide.as<float>()), ldb, beta, C, ldc);
    return;
  }
  if (A.dtype == DType::kFloat32 && C.dtype == DType::kBFloat16) {
    const int64_t elements = span_of(M, N, ldc);
    Scratch wide(*this, elements * sizeof(float));
    widen_bf16(static_cast<const uint16_t*>(C.data), wide.as<float>(), elements);
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, f32_out(wide.as<float>()), ldc);
    round_to_bf16(wide.as<float>(), static_cast<uint16_t*>(C.data), elements);
    return;
  }
  const ColumnMajorGemm g = column_major_gemm(trans_a, trans_b, M, N, K, lda, ldb, ldc);
  MOEFOLD_CUBLAS_CHECK(cublasGemmEx(
      cublas_, g.trans_first ? CUBLAS_OP_T : CUBLAS_OP_N,
      g.trans_second ? CUBLAS_OP_T : CUBLAS_OP_N, as_blas_int(g.m), as_blas_int(g.n),
      as_blas_int(g.k), &alpha, B.data, blas_type(B.dtype), as_blas_int(g.ld_first), A.data,
      blas_type(A.dtype), as_blas_int(g.ld_second), &beta, C.data, blas_type(C.dtype),
      as_blas_int(g.ldc),
      A.dtype == DType::kBFloat16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC,
      CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y, int64_t N,
                                       int64_t I, int64_t O, bool accumulate) {
  gemm(false, true, N, O, I, 1.0f, x, I, w, I, accumulate ? 1.0f : 0.0f, y, O);
}

void CudaBackend::linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx, int64_t N,
                                           int64_t I, int64_t O, bool accumulate) {
  gemm(false, false, N, I, O, 1.0f, dy, O, w, I, accumulate ? 1.0f : 0.0f, dx, I);
}

void CudaBackend::linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw, int64_t N,
                                           int64_t I, int64_t O) {
  gemm(true, false, O, I, N, 1.0f, dy, O, x, I, 1.0f, dw, I);
}

// Expert GEMMs whose operands are all bf16 (training's forward and dx) run as one
// cublasGemmGroupedBatchedEx over the non-empty experts, accumulating in float32. Other mixes
// keep one cublasGemmEx per expert: the grouped call has one type for A and B and refuses a
// float32 C from bf16 operands (the bf16 dW into float32 gradients); float32 operands stay on
// the per-expert calls because whether the grouped call takes CUBLAS_COMPUTE_32F_PEDANTIC
// (MODEL.md allows no TF32) is unconfirmed on a GPU. bf16 matrices not on 16-byte boundaries
// (rows whose bytes are no multiple of 16) also keep the per-expert calls, as cuBLAS asks that
// alignment of grouped bf16 operands.
bool CudaBackend::run_grouped(GroupedLinear op, GemmInput a, GemmInput b, GemmOutput c,
                              const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                              bool accumulate) {
  const DType dtype = DType::kBFloat16;
  if (a.dtype != dtype || b.dtype != dtype || c.dtype != dtype || I == 0 || O == 0) return false;
  const GroupedGemmPlan plan = plan_grouped_linear(op, a, b, c, offsets, G, I, O, accumulate);
  if (!plan.aligned_16) return false;
  const int groups = plan.groups();
  if (groups == 0) return true;
  std::vector<cublasOperation_t> trans_first(groups), trans_second(groups);
  for (int g = 0; g < groups; ++g) {
    trans_first[g] = plan.trans_first[g] ? CUBLAS_OP_T : CUBLAS_OP_N;
    trans_second[g] = plan.trans_second[g] ? CUBLAS_OP_T : CUBLAS_OP_N;
  }
  // cuBLAS reads the matrix pointer arrays on the device and every other array on the host.
  // They go up through copy_from_host's pinned ring, so the host does not wait.
  std::vector<const void*> pointers(plan.first);
  pointers.insert(pointers.end(), plan.second.begin(), plan.second.end());
  pointers.insert(pointers.end(), plan.c.begin(), plan.c.end());
  const std::unique_ptr<Scratch> device_pointers = upload(pointers.data(), 3 * groups);
  void** first = device_pointers->as<void*>();
  MOEFOLD_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      cublas_, trans_first.data(), trans_second.data(), plan.m.data(), plan.n.data(),
      plan.k.data(), plan.alpha.data(), first, blas_type(dtype), plan.ld_first.data(),
      first + groups, blas_type(dtype), plan.ld_second.data(), plan.beta.data(),
      first + 2 * groups, blas_type(dtype), plan.ldc.data(), groups, plan.group_size.data(),
      CUBLAS_COMPUTE_32F));
  return true;
}

void CudaBackend::grouped_linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y,
                                               const int64_t* offsets, int64_t G, int64_t I,
                                               int64_t O) {
  check_offsets(offsets, G);
  if (run_grouped(GroupedLinear::kForward, x, w, y, offsets, G, I, O, false)) return;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) {
      linear_forward_mixed(advance(x, begin * I), advance(w, g * O * I), advance(y, begin * O),
                           rows, I, O, false);
    }
  }
}

void CudaBackend::grouped_linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx,
                                                   const int64_t* offsets, int64_t G, int64_t I,
                                                   int64_t O, bool accumulate) {
  check_offsets(offsets, G);
  if (run_grouped(GroupedLinear::kBackwardDx, dy, w, dx, offsets, G, I, O, accumulate)) return;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) {
      linear_backward_dx_mixed(advance(dy, begin * O), advance(w, g * O * I),
                               advance(dx, begin * I), rows, I, O, accumulate);
    }
  }
}

void CudaBackend::grouped_linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw,
                                                   const int64_t* offsets, int64_t G, int64_t I,
                                                   int64_t O) {
  check_offsets(offsets, G);
  if (run_grouped(GroupedLinear::kBackwardDw, dy, x, dw, offsets, G, I, O, false)) return;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    if (rows > 0) {
      linear_backward_dw_mixed(advance(dy, begin * O), advance(x, begin * I),
                               advance(dw, g * O * I), rows, I, O);
    }
  }
}

// The float32 GEMMs are the mixed ones with every operand float32.
void CudaBackend::linear_forward(const float* x, const float* w, float* y, int64_t N, int64_t I,
                                 int64_t O, bool accumulate) {
  linear_forward_mixed(f32_in(x), f32_in(w), f32_out(y), N, I, O, accumulate);
}

void CudaBackend::linear_backward_dx(const float* dy, const float* w, float* dx, int64_t N,
                                     int64_t I, int64_t O, bool accumulate) {
  linear_backward_dx_mixed(f32_in(dy), f32_in(w), f32_out(dx), N, I, O, accumulate);
}

void CudaBackend::linear_backward_dw(const float* dy, const float* x, float* dw, int64_t N,
                                     int64_t I, int64_t O) {
  linear_backward_dw_mixed(f32_in(dy), f32_in(x), f32_out(dw), N, I, O);
}

void CudaBackend::grouped_linear_forward(const float* x, const float* w, float* y,
                                         const int64_t* offsets, int64_t G, int64_t I,
                                         int64_t O) {
  grouped_linear_forward_mixed(f32_in(x), f32_in(w), f32_out(y), offsets, G, I, O);
}

void CudaBackend::grouped_linear_backward_dx(const float* dy, const float* w, float* dx,
                                             const int64_t* offsets, int64_t G, int64_t I,
                                             int64_t O, bool accumulate) {
  grouped_linear_backward_dx_mixed(f32_in(dy), f32_in(w), f32_out(dx), offsets, G, I, O,
                                   accumulate);
}

void CudaBackend::grouped_linear_backward_dw(const float* dy, const float* x, float* dw,
                                             const int64_t* offsets, int64_t G, int64_t I,
                                             int64_t O) {
  grouped_linear_backward_dw_mixed(f32_in(dy), f32_in(x), f32_out(dw), offsets, G, I, O);
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
  const auto run = [&] {
    gemm(false, false, n, n, n, 1.0f, f32_in(a.as<float>()), n, f32_in(b.as<float>()), n, 0.0f,
         f32_out(c.as<float>()), n);
  };
  run();
  do {
    MOEFOLD_CUDA_CHECK(cudaEventRecord(start, stream_));
    run();
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
