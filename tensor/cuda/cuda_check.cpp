#include "tensor/cuda/cuda_check.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/strings/str_format.h"

namespace moefold::cuda {

void check_cuda(int status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  const auto error = static_cast<cudaError_t>(status);
  // Reset the thread's last error: a failure the caller catches (a non-sticky one) must not be
  // reported again by the next launch check (MOEFOLD_CUDA_CHECK_LAUNCH reads cudaGetLastError).
  cudaGetLastError();
  int device = -1;
  cudaGetDevice(&device);
  throw CudaError(absl::StrFormat("%s:%d: %s failed on cuda:%d: %s (%s)", file, line, call, device,
                                  cudaGetErrorString(error), cudaGetErrorName(error)));
}

void check_cublas(int status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const auto error = static_cast<cublasStatus_t>(status);
  throw CudaError(absl::StrFormat("%s:%d: %s failed: %s (%s)", file, line, call,
                                  cublasGetStatusString(error), cublasGetStatusName(error)));
}

}  // namespace moefold::cuda
