// Launches of the flash-style bf16 attention kernels (flash_attention_kernels.cuh): where
// they fit, the shared memory they opt into, and their grids.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "tensor/attention_plan.h"
#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/flash_attention_kernels.cuh"

namespace moefold::cuda {
namespace {

// Opts a kernel into `bytes` of dynamic shared memory (over the default 48 KiB) on the current
// device.
template <typename Kernel>
void allow_shared_bytes(Kernel kernel, size_t bytes) {
  MOEFOLD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
}

// Whether the device gives a block the head dim's shared memory; if so, opts its kernels in.
template <int D>
bool set_up_head_dim(const cudaDeviceProp& prop) {
  const size_t forward = shared_bytes<ForwardShared, D>();
  const size_t backward = shared_bytes<BackwardShared, D>();
  if (std::max(forward, backward) > prop.sharedMemPerBlockOptin) return false;
  allow_shared_bytes(flash_forward_kernel<D>, forward);
  allow_shared_bytes(flash_backward_kernel<D, uint16_t>, backward);
  allow_shared_bytes(flash_backward_kernel<D, float>, backward);
  return true;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void CudaBackend::set_up_flash_attention(const cudaDeviceProp& prop) {
  // The kernels as the device will run them: built (or JIT-compiled from PTX) for sm_80 or
  // later, whose bf16 WMMA they need; a build for older targets only holds the trap.
  cudaFuncAttributes built{};
  if (prop.major < 8 || cudaFuncGetAttributes(&built, flash_forward_kernel<64>) != cudaSuccess ||
      built.ptxVersion < 80) {
    cudaGetLastError();  // clear a failed query's error
    return;
  }
  // sm_86/89 give a block 99 KiB of shared memory, less than the backward needs at d 128.
  flash_d64_ = set_up_head_dim<64>(prop);
  flash_d128_ = set_up_head_dim<128>(prop);
}

bool CudaBackend::flash_attention_fits(int64_t d, int64_t nh, int64_t nkv, int64_t B,
                                       std::initializer_list<const void*> tensors) const {
  if (flash_mode_ == FlashAttentionMode::kNever || !flash_attention_serves(d) || nh > 65535 ||
      nkv > 65535 || B > 65535) {
    return false;
  }
  for (const void* p : tensors) {
    if (!aligned16(p)) return false;
  }
  return true;
}

void CudaBackend::flash_attention_forward_bf16(const uint16_t* q, const uint16_t* k,
                                               const uint16_t* v, uint16_t* o, float* lse,
                                               const int32_t* q_pos, const int32_t* k_pos,
                                               int64_t B, int64_t Sq, int64_t Skv, int64_t nh,
                                               int64_t nkv, int64_t d) {
  MOEFOLD_CHECK(nkv > 0 && nh % nkv == 0, "heads " << nh << " not divisible by kv heads " << nkv);
  const std::vector<int32_t> key_tiles = flash_key_tiles(q_pos, Sq, k_pos, Skv, kFlashTile);
  if (key_tiles.empty() || nh == 0 || B == 0) return;
  MOEFOLD_CHECK(key_tiles.size() <= INT_MAX, "attention query tiles " << key_tiles.size());
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  auto tiles_dev = upload(key_tiles.data(), static_cast<int64_t>(key_tiles.size()));
  const dim3 grid = flash_forward_grid(key_tiles.size(), nh, B);
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const auto launch = [&](auto kernel, size_t bytes) {
    kernel<<<grid, kBlockThreads, bytes, stream_>>>(
        q, k, v, o, lse, q_pos_dev->as<int32_t>(), k_pos_dev->as<int32_t>(),
        tiles_dev->as<int32_t>(), Sq, Skv, static_cast<int>(nh), static_cast<int>(nkv), scale);
    MOEFOLD_CUDA_CHECK_LAUNCH();
  };
  if (d == 64) {
    launch(flash_forward_kernel<64>, shared_bytes<ForwardShared, 64>());
  } else {
    launch(flash_forward_kernel<128>, shared_bytes<ForwardShared, 128>());
  }
}

void CudaBackend::flash_attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                                const uint16_t* k, const uint16_t* v,
                                                const float* lse, const float* delta,
                                                float* dq32, GemmOutput dk, GemmOutput dv,
                                                const int32_t* q_pos, const int32_t* k_pos,
                                                int64_t B, int64_t Sq, int64_t Skv, int64_t nh,
                                                int64_t nkv, int64_t d) {
  MOEFOLD_CHECK(nkv > 0 && nh % nkv == 0, "heads " << nh << " not divisible by kv heads " << nkv);
  const std::vector<int32_t> key_tiles = flash_key_tiles(q_pos, Sq, k_pos, Skv, kFlashTile);
  const int64_t kv_tiles = (Skv + kFlashTile - 1) / kFlashTile;
  if (key_tiles.empty() || kv_tiles == 0 || nkv == 0 || B == 0) return;
  MOEFOLD_CHECK(key_tiles.size() <= INT_MAX && kv_tiles <= INT_MAX,
                "attention tiles " << key_tiles.size() << " × " << kv_tiles);
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  auto tiles_dev = upload(key_tiles.data(), static_cast<int64_t>(key_tiles.size()));
  const dim3 grid = flash_backward_grid(kv_tiles, nkv, B);
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  MOEFOLD_CHECK(dk.dtype == dv.dtype, "attention dK and dV must have one dtype");
  const auto launch = [&](auto kernel, size_t bytes, auto* dk_data, auto* dv_data) {
    kernel<<<grid, kBlockThreads, bytes, stream_>>>(
        dout, q, k, v, lse, delta, dq32, dk_data, dv_data, q_pos_dev->as<int32_t>(),
        k_pos_dev->as<int32_t>(), tiles_dev->as<int32_t>(), static_cast<int>(key_tiles.size()),
        Sq, Skv, static_cast<int>(nh), static_cast<int>(nkv), scale);
    MOEFOLD_CUDA_CHECK_LAUNCH();
  };
  const bool wide = dk.dtype == DType::kFloat32;
  auto* dk32 = static_cast<float*>(dk.data);
  auto* dv32 = static_cast<float*>(dv.data);
  auto* dk16 = static_cast<uint16_t*>(dk.data);
  auto* dv16 = static_cast<uint16_t*>(dv.data);
  const size_t bytes = d == 64 ? shared_bytes<BackwardShared, 64>()
                               : shared_bytes<BackwardShared, 128>();
  if (d == 64 && wide) launch(flash_backward_kernel<64, float>, bytes, dk32, dv32);
  if (d == 64 && !wide) launch(flash_backward_kernel<64, uint16_t>, bytes, dk16, dv16);
  if (d == 128 && wide) launch(flash_backward_kernel<128, float>, bytes, dk32, dv32);
  if (d == 128 && !wide) launch(flash_backward_kernel<128, uint16_t>, bytes, dk16, dv16);
}

}  // namespace moefold::cuda
