// CUB's DeviceReduce for the emulated device: the reduction in index order on the CPU, with the
// two-call temporary-storage protocol and the device-memory checks of a kernel's arguments, held
// on the stream like a kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cub {

struct DeviceReduce {
  template <class In, class Out, class Reduce, class Transform, class T>
  static cudaError_t TransformReduce(void* temp_storage, size_t& temp_bytes, In in, Out out,
                                     int64_t items, Reduce reduce, Transform transform, T init,
                                     cudaStream_t stream = nullptr) {
    constexpr size_t kTempBytes = 16;
    if (temp_storage == nullptr) {
      temp_bytes = kTempBytes;
      return cudaSuccess;
    }
    using moefold::cuda_emulation::check_kernel_pointer;
    if (temp_bytes < kTempBytes || !check_kernel_pointer(temp_storage, 0) ||
        !check_kernel_pointer(in, 2) || !check_kernel_pointer(out, 3)) {
      return cudaErrorInvalidValue;
    }
    moefold::cuda_emulation::enqueue(stream, [=] {
      T total = init;
      for (int64_t i = 0; i < items; ++i) total = reduce(total, transform(in[i]));
      *out = total;
    });
    return cudaSuccess;
  }
};

}  // namespace cub
