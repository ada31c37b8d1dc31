// The emulated device's cuBLAS (include/cublas_v2.h): C = α·op(A)·op(B) + β·C, column-major,
// accumulated in float64 and rounded once to C's type; C is not read when β is 0. Arguments are
// checked when called, the product computed when the handle's stream reaches it (with α and β
// read at the call, as in cuBLAS's host pointer mode).
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

// Whether a (rows, cols) column-major matrix with leading dimension ld lies in `device`'s
// memory.
bool on_device(const char* name, const void* m, cudaDataType type, int rows, int cols, int ld,
               int device) {
  if (rows == 0 || cols == 0) return true;
  const size_t bytes = (size_t(cols - 1) * ld + rows) * element_bytes(type);
  if (memory().device_of(m, bytes) == device) return true;
  std::fprintf(stderr, "emulated cuBLAS: %s (%d × %d, ld %d) is not within memory of device %d\n",
               name, rows, cols, ld, device);
  return false;
}

struct Gemm {
  cublasOperation_t transa, transb;
  int m, n, k;
  float alpha;
  const void* A;
  cudaDataType Atype;
  int lda;
  const void* B;
  cudaDataType Btype;
  int ldb;
  float beta;
  void* C;
  cudaDataType Ctype;
  int ldc;
};

int a_rows(const Gemm& g) { return g.transa == CUBLAS_OP_T ? g.k : g.m; }
int b_rows(const Gemm& g) { return g.transb == CUBLAS_OP_T ? g.n : g.k; }

// Why cuBLAS would refuse the product's sizes and types, or success.
cublasStatus_t check_shape(const Gemm& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0 || g.lda < std::max(1, a_rows(g)) ||
      g.ldb < std::max(1, b_rows(g)) || g.ldc < std::max(1, g.m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (g.Atype != g.Btype || (g.Ctype == CUDA_R_16BF && g.Atype != CUDA_R_16BF)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// Whether the matrices the product touches lie in `device`'s memory.
bool check_memory(const Gemm& g, int device) {
  if (g.m == 0 || g.n == 0) return true;
  const bool ta = g.transa == CUBLAS_OP_T, tb = g.transb == CUBLAS_OP_T;
  return (g.k == 0 || (on_device("A", g.A, g.Atype, a_rows(g), ta ? g.m : g.k, g.lda, device) &&
                       on_device("B", g.B, g.Btype, b_rows(g), tb ? g.k : g.n, g.ldb, device))) &&
         on_device("C", g.C, g.Ctype, g.m, g.n, g.ldc, device);
}

// The product of a checked Gemm.
void multiply(const Gemm& g) {
  const auto [transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc] =
      g;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  if (m == 0 || n == 0) return;
  // op(A)·op(B) in float64 by the CPU's BLAS on exact float64 copies of the operands.
  const auto widened = [](const void* m, cudaDataType type, int rows, int cols, int ld) {
    std::vector<double> wide(cols == 0 ? 0 : size_t(cols - 1) * ld + rows);
    for (size_t i = 0; i < wide.size(); ++i) wide[i] = element(m, type, i);
    return wide;
  };
  std::vector<double> product(size_t(m) * n, 0.0);
  if (k > 0) {
    const std::vector<double> a = widened(A, Atype, a_rows(g), ta ? m : k, lda);
    const std::vector<double> b = widened(B, Btype, b_rows(g), tb ? k : n, ldb);
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
}

int current_device() {
  int device = 0;
  cudaGetDevice(&device);
  return device;
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
  using namespace moefold::cuda_emulation;
  const Gemm g{transa, transb, m, n,     k,   *static_cast<const float*>(alpha), A,
               Atype,  lda,    B, Btype, ldb, *static_cast<const float*>(beta),  C,
               Ctype,  ldc};
  if (const cublasStatus_t status = check_shape(g); status != CUBLAS_STATUS_SUCCESS) return status;
  if (!check_memory(g, current_device())) return CUBLAS_STATUS_INVALID_VALUE;
  enqueue(handle->stream, [g] { multiply(g); });
  return CUBLAS_STATUS_SUCCESS;
}

// The matrix pointer arrays are read on the device (when the stream reaches the call), every
// other array on the host (at the call); a matrix a GPU would fault on ends the process there.
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
  using namespace moefold::cuda_emulation;
  const auto* alphas = static_cast<const float*>(alpha_array);
  const auto* betas = static_cast<const float*>(beta_array);
  // Each problem's shape, with null matrices that the device fills in from the pointer arrays.
  std::vector<Gemm> shapes;
  for (int g = 0; g < group_count; ++g) {
    const Gemm shape{transa_array[g], transb_array[g], m_array[g], n_array[g],
                     k_array[g],      alphas[g],       nullptr,    Atype,
                     lda_array[g],    nullptr,         Btype,      ldb_array[g],
                     betas[g],        nullptr,         Ctype,      ldc_array[g]};
    if (const cublasStatus_t status = check_shape(shape); status != CUBLAS_STATUS_SUCCESS) {
      return status;
    }
    shapes.insert(shapes.end(), group_size[g], shape);
  }
  const int device = current_device();
  enqueue(handle->stream, [shapes = std::move(shapes), Aarray, Barray, Carray, device] {
    for (size_t p = 0; p < shapes.size(); ++p) {
      Gemm g = shapes[p];
      g.A = Aarray[p];
      g.B = Barray[p];
      g.C = Carray[p];
      if (!check_memory(g, device)) {
        std::fprintf(stderr, "emulated cuBLAS: grouped GEMM problem %zu faults on device %d\n", p,
                     device);
        std::abort();
      }
      multiply(g);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}
