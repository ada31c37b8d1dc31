// Checked CUDA, cuBLAS and NCCL calls (STYLE.md rule 10, after NCCL's checks.h): a failed call
// throws CudaError naming the call, the file and line, and the library's own error text.
#pragma once

#include <stdexcept>
#include <string>

namespace moefold::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Each throws CudaError when `status` is not its library's success value.
void check_cuda(int status, const char* call, const char* file, int line);
void check_cublas(int status, const char* call, const char* file, int line);

}  // namespace moefold::cuda

#define MOEFOLD_CUDA_CHECK(call) \
  ::moefold::cuda::check_cuda(static_cast<int>(call), #call, __FILE__, __LINE__)
#define MOEFOLD_CUBLAS_CHECK(call) \
  ::moefold::cuda::check_cublas(static_cast<int>(call), #call, __FILE__, __LINE__)
// After a kernel launch: the launch itself (bad configuration, no device code for this GPU).
#define MOEFOLD_CUDA_CHECK_LAUNCH() MOEFOLD_CUDA_CHECK(cudaGetLastError())
