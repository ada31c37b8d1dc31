// CUDA's device dialect for the host compiler, so that the CUDA kernels' own source (tensor/cuda,
// through include/cuda_runtime.h) runs in the CPU tests: every thread of a block is a fiber on one
// OS thread, blocks run one after another, and the fibers switch only at the warp's and the
// block's synchronisation points. So a run is deterministic, and what a kernel gets wrong in its
// indexing, tiling, shared-memory carving or WMMA operand layouts shows in its results on any
// machine, before it meets a GPU.
//
// What it checks beyond the results (each an EmulationError naming the kernel's line):
//   - a barrier reached by part of its scope (divergent __syncthreads or __syncwarp, or one
//     after a thread of the scope returned), or the scope's threads at different barriers;
//   - WMMA pointers not 256-bit aligned and leading dimensions not a multiple of 16 bytes;
//   - a WMMA accumulator's elements belong to different lanes (lane e % 32 holds element e), and
//     a store writes each lane's own: a read of another lane's part without a __syncwarp after
//     the store sees the old values, deterministically;
//   - dynamic shared memory is a heap buffer of exactly the launch's bytes (AddressSanitizer
//     builds see overruns).
// Include this (or include/cuda_runtime.h) before a kernel header; it stands in for the device
// side of cuda_runtime.h, cuda_bf16.h and mma.h.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <source_location>
#include <stdexcept>
#include <string>

#define MOEFOLD_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // blocks run one after another
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x = 1, unsigned y = 1, unsigned z = 1) : x(x), y(y), z(z) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct __nv_bfloat16 {
  uint16_t bits;
};

// The running fiber's coordinates: the scheduler sets them at each switch.
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace moefold::cuda_emulation {

struct EmulationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs `body` as every thread of every block of `grid`, with `shared_bytes` of dynamic shared
// memory per block; warps are 32 consecutive threads of the block (x fastest), as on the GPU.
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  run_grid(grid, block, shared_bytes, [&] { kernel(args...); });
}

// From device code: wait at a barrier of the block or of the running thread's warp.
void block_barrier(const std::source_location& site);
void warp_barrier(const std::source_location& site);
// Ends the running thread's block with an error naming `site`.
[[noreturn]] void fail(const std::string& what, const std::source_location& site);
unsigned char* block_shared_memory();
// The running thread's lane in its warp, and its slot in the warp's exchange area (shuffles).
unsigned lane_id();
uint64_t& exchange_slot(unsigned lane);

}  // namespace moefold::cuda_emulation

inline void __syncthreads(std::source_location site = std::source_location::current()) {
  moefold::cuda_emulation::block_barrier(site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location site = std::source_location::current()) {
  if (mask != 0xffffffffu) moefold::cuda_emulation::fail("partial __syncwarp mask", site);
  moefold::cuda_emulation::warp_barrier(site);
}

inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width = 32,
                             std::source_location site = std::source_location::current()) {
  if (mask != 0xffffffffu || width != 32) {
    moefold::cuda_emulation::fail("__shfl_xor_sync with a partial mask or width", site);
  }
  const unsigned lane = moefold::cuda_emulation::lane_id();
  uint64_t& mine = moefold::cuda_emulation::exchange_slot(lane);
  mine = 0;
  __builtin_memcpy(&mine, &value, sizeof(value));
  moefold::cuda_emulation::warp_barrier(site);
  float other;
  __builtin_memcpy(&other, &moefold::cuda_emulation::exchange_slot(lane ^ lane_mask),
                   sizeof(other));
  moefold::cuda_emulation::warp_barrier(site);  // every lane read before the slots change
  return other;
}

// CUDA's integer min and max of device code.
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a < b ? b : a; }

inline float atomicAdd(float* address, float value) {  // fibers never interleave here
  const float old = *address;
  *address = old + value;
  return old;
}

namespace moefold::cuda {
// Stands in for launch_utils.cuh's `extern __shared__` array.
inline unsigned char* dynamic_shared_memory() { return cuda_emulation::block_shared_memory(); }
}  // namespace moefold::cuda

#include "tests/tensor/cuda_emulation/wmma_emulation.h"
