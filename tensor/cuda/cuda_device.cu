#include "tensor/cuda/cuda_device.h"

#include <cuda_runtime.h>

#include "absl/strings/str_format.h"
#include "tensor/device_versions.h"

namespace moefold::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

std::string unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (status == cudaSuccess && count > 0) return "";
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return gpu_unavailable_reason(
      driver, runtime,
      status == cudaSuccess ? std::string("no GPU is visible")
                            : absl::StrFormat("%s: %s", cudaGetErrorName(status),
                                              cudaGetErrorString(status)));
}

absl::Status set_device(int device) {
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();  // the runtime keeps every error for cudaGetLastError: a later launch
                         // check would report this one
    return absl::InternalError(
        absl::StrFormat("cudaSetDevice(%d) failed: %s", device, cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> describe_device(int device) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError(absl::StrFormat("cudaGetDeviceProperties(%d) failed: %s", device,
                                               cudaGetErrorString(err)));
  }
  return absl::StrFormat("%s, %.1f GiB, sm_%d%d", prop.name,
                         prop.totalGlobalMem / double(1 << 30), prop.major, prop.minor);
}

}  // namespace moefold::cuda
