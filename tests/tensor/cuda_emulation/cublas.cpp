// The emulated device's cuBLAS (include/cublas_v2.h): C = α·op(A)·op(B) + β·C, column-major,
// accumulated in float64 and rounded once to C's type; C is not read when β is 0.
#include <cblas.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "tensor/kernel_math.h"
#include "tests/tensor/cuda_emulation/emulated_memory.h"
#include "tests/tensor/cuda_emulation/emulated_streams.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace moefold::cuda_emulation {
namespace {

size_t element_bytes(cudaDataType type) { return type == CUDA_R_16BF ? 2 : 4; }

double element(const void* m, cudaDataType type, int64_t at) {
  return type == CUDA_R_16BF ? bf16_bits_to_float(static_cast<const uint16_t*>(m)[at])
                             : static_cast<const float*>(m)[at];
}

void store(void* m, cudaDataType type, int64_t at, double value) {
  if (type == CUDA_R_16BF) {
    static_cast<uint16_t*>(m)[at] = float_to_bf16_bits(static_cast<float>(value));
  } else {
    static_cast<float*>(m)[at] = static_cast<float>(value);
  }
}

// Whether a (rows, cols) column-major matrix with leading dimension ld lies in the current
// device's memory.
bool on_device(const char* name, const void* m, cudaDataType type, int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return true;
  int device = 0;
  cudaGetDevice(&device);
  const size_t bytes = (size_t(cols - 1) * ld + rows) * element_bytes(type);
  if (memory().device_of(m, bytes) == device) return true;
  std::fprintf(stderr, "emulated cuBLAS: %s (%d × %d, ld %d) is not within memory of device %d\n",
               name, rows, cols, ld, device);
  return false;
}

cublasStatus_t gemm(cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                    float alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                    cudaDataType Btype, int ldb, float beta, void* C, cudaDataType Ctype, int ldc) {
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  const int a_rows = ta ? k : m, b_rows = tb ? n : k;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) ||
      ldc < std::max(1, m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (Atype != Btype || (Ctype == CUDA_R_16BF && Atype != CUDA_R_16BF)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if ((k > 0 && (!on_device("A", A, Atype, a_rows, ta ? m : k, lda) ||
                 !on_device("B", B, Btype, b_rows, tb ? k : n, ldb))) ||
      !on_device("C", C, Ctype, m, n, ldc)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  // op(A)·op(B) in float64 by the CPU's BLAS on exact float64 copies of the operands.
  const auto widened = [](const void* m, cudaDataType type, int rows, int cols, int ld) {
    std::vector<double> wide(cols == 0 ? 0 : size_t(cols - 1) * ld + rows);
    for (size_t i = 0; i < wide.size(); ++i) wide[i] = element(m, type, i);
    return wide;
  };
  std::vector<double> product(size_t(m) * n, 0.0);
  if (k > 0) {
    const std::vector<double> a = widened(A, Atype, a_rows, ta ? m : k, lda);
    const std::vector<double> b = widened(B, Btype, b_rows, tb ? k : n, ldb);
    cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0, a.data(), lda, b.data(), ldb, 0.0, product.data(), m);
  }
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      const int64_t at = i + int64_t{j} * ldc;
      const double c = beta == 0.0f ? 0.0 : beta * element(C, Ctype, at);
      store(C, Ctype, at, alpha * product[i + size_t(j) * m] + c);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

bool host_array(const void* array) { return memory().device_of(array, 0) == kNotDevice; }

}  // namespace
}  // namespace moefold::cuda_emulation

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  }
  return "unknown error";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (compute == CUBLAS_COMPUTE_32F_PEDANTIC && Atype != CUDA_R_32F) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  moefold::cuda_emulation::settle(handle->stream);
  return moefold::cuda_emulation::gemm(transa, transb, m, n, k, *static_cast<const float*>(alpha),
                                       A, Atype, lda, B, Btype, ldb,
                                       *static_cast<const float*>(beta), C, Ctype, ldc);
}

// The matrix pointer arrays are read on the device, every other array on the host.
cublasStatus_t cublasGemmGroupedBatchedEx(
    cublasHandle_t handle, const cublasOperation_t transa_array[],
    const cublasOperation_t transb_array[], const int m_array[], const int n_array[],
    const int k_array[], const void* alpha_array, const void* const Aarray[], cudaDataType Atype,
    const int lda_array[], const void* const Barray[], cudaDataType Btype, const int ldb_array[],
    const void* beta_array, void* const Carray[], cudaDataType Ctype, const int ldc_array[],
    int group_count, const int group_size[], cublasComputeType_t compute) {
  using moefold::cuda_emulation::host_array;
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (group_count < 0 || compute != CUBLAS_COMPUTE_32F) return CUBLAS_STATUS_INVALID_VALUE;
  if (group_count == 0) return CUBLAS_STATUS_SUCCESS;
  moefold::cuda_emulation::settle(handle->stream);
  int problems = 0;
  for (int g = 0; g < group_count; ++g) problems += group_size[g];
  const size_t pointers = sizeof(void*) * problems;
  if (!host_array(transa_array) || !host_array(transb_array) || !host_array(m_array) ||
      !host_array(n_array) || !host_array(k_array) || !host_array(alpha_array) ||
      !host_array(beta_array) || !host_array(lda_array) || !host_array(ldb_array) ||
      !host_array(ldc_array) || !host_array(group_size) ||
      moefold::cuda_emulation::memory().device_of(Aarray, pointers) < 0 ||
      moefold::cuda_emulation::memory().device_of(Barray, pointers) < 0 ||
      moefold::cuda_emulation::memory().device_of(Carray, pointers) < 0) {
    std::fprintf(stderr, "emulated cuBLAS: grouped GEMM arrays on the wrong side\n");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const auto* alphas = static_cast<const float*>(alpha_array);
  const auto* betas = static_cast<const float*>(beta_array);
  int problem = 0;
  for (int g = 0; g < group_count; ++g) {
    for (int i = 0; i < group_size[g]; ++i, ++problem) {
      const cublasStatus_t status = moefold::cuda_emulation::gemm(
          transa_array[g], transb_array[g], m_array[g], n_array[g], k_array[g], alphas[g],
          Aarray[problem], Atype, lda_array[g], Barray[problem], Btype, ldb_array[g], betas[g],
          Carray[problem], Ctype, ldc_array[g]);
      if (status != CUBLAS_STATUS_SUCCESS) return status;
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}
