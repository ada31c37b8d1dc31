// Launch shapes and warp reductions shared by this folder's kernels. nvcc includes the CUDA
// runtime itself; the CPU tests include this after their emulation of it
// (tests/tensor/cuda_emulation).
#pragma once

#include <algorithm>
#include <cstdint>

#include "tensor/kernel_math.h"

namespace moefold::cuda {

// Storage of a kernel's activations: float32, or bf16 bits (MODEL.md "Mixed precision"), read
// into float32 exactly and written rounded to nearest even. Kernels templated on T compute in
// float32 either way.
__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const uint16_t* p, int64_t i) {
  return bf16_bits_to_float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float value) { p[i] = value; }
__device__ __forceinline__ void store(uint16_t* p, int64_t i, float value) {
  p[i] = float_to_bf16_bits(value);
}

#ifndef MOEFOLD_CUDA_EMULATION  // which gives each block a buffer of the launch's bytes
// The block's dynamic shared memory (the launch's third argument).
__device__ __forceinline__ unsigned char* dynamic_shared_memory() {
  extern __shared__ __align__(128) unsigned char shared_memory[];
  return shared_memory;
}
#endif

constexpr int kThreads = 256;  // threads per block of element-wise kernels
constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n elements (capped: the loop covers the rest).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535 * 8));
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  }
  return value;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `shared` holds 32 floats.
__device__ __forceinline__ float block_sum(float value, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  value = warp_sum(value);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  const int warps = blockDim.x / kWarp;
  value = lane < warps ? shared[lane] : 0.0f;
  return warp_sum(value);
}

__device__ __forceinline__ float block_max(float value, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  const int warps = blockDim.x / kWarp;
  value = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(value);
}

}  // namespace moefold::cuda
