// What `kernel<<<grid, block, shared, stream>>>(args)` becomes in the emulated build of
// tensor/cuda (emulated_sources.cmake rewrites it to Launch(kernel, grid, ...)(args)): the
// runtime's launch checks, a check that every pointer argument is memory the current device
// may read, and then the kernel under cuda_emulation.h. A refused launch leaves its error for
// cudaGetLastError, as on the GPU. A kernel is held on its stream with its arguments' values and
// runs when something waits for it (emulated_streams.h).
#pragma once

#include <cstddef>
#include <functional>
#include <type_traits>

namespace moefold::cuda_emulation {

// cudaSuccess, or why the runtime refuses this launch (an empty or oversized block or grid,
// more dynamic shared memory than the kernel opted into).
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes);
void set_launch_error(cudaError_t error);
// Whether a kernel on the current device may dereference `pointer`: null, in one of its
// allocations, or pinned host memory. Otherwise prints which argument of which launch.
bool check_kernel_pointer(const void* pointer, int argument);
void enqueue(cudaStream_t stream, std::function<void()> work);  // emulated_streams.h

template <class Kernel>
class Launch {
 public:
  Launch(Kernel kernel, dim3 grid, dim3 block, size_t shared_bytes = 0,
         cudaStream_t stream = nullptr)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args... args) const {
    const cudaError_t refused =
        check_launch(reinterpret_cast<const void*>(kernel_), grid_, block_, shared_bytes_);
    if (refused != cudaSuccess) return set_launch_error(refused);
    int argument = 0;
    const bool readable = (pointer_ok(args, argument++) && ... && true);
    if (!readable) return set_launch_error(cudaErrorIllegalAddress);
    enqueue(stream_, [kernel = kernel_, grid = grid_, block = block_, shared = shared_bytes_,
                      args...] { launch(grid, block, shared, kernel, args...); });
  }

 private:
  template <class A>
  static bool pointer_ok(const A& value, int argument) {
    if constexpr (std::is_pointer_v<A>) {
      return check_kernel_pointer(static_cast<const void*>(value), argument);
    } else {
      return true;
    }
  }

  Kernel kernel_;
  dim3 grid_, block_;
  size_t shared_bytes_;
  cudaStream_t stream_;
};

}  // namespace moefold::cuda_emulation
