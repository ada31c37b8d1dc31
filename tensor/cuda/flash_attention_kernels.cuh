// Flash-style bf16 attention on tensor cores (MODEL.md "Mixed precision": bf16 q, k, v, o;
// float32 scores, softmax statistics and lse), for head dims 64 and 128: scores never leave
// shared memory. Tiles of kFlashTile query rows and keys, four warps of 16 rows each, WMMA
// 16×16×16 bf16 GEMMs accumulating in float32. The tile schedule is tensor/attention_plan.h's
// flash_key_tiles and the running softmax row_math.h's online_softmax_step, both executed on
// the CPU by tests/tensor/flash_schedule_test.cpp as these kernels run them, and these kernels
// themselves run on the CPU in tests/tensor/cuda_emulation.
//   forward   block (query tile, head, b): for each key tile it sees, S = scale·Q Kᵀ, fold S into
//             the running max and sum, O = O·rescale + P V (P in bf16); then O/sum and lse.
//   backward  block (key tile, kv head, b), FA2-style: for each head of the group and each query
//             tile that sees it, P from lse, dV += Pᵀ dO, dS = P ⊙ (dO Vᵀ − delta), dK += dSᵀ Q,
//             and dQ += dS K by float32 atomics; dK and dV (bf16 or float32) are the block's
//             alone.
// A lane owns one row of its warp's 16 (two lanes a row) and every other column of it.
// One translation unit per binary includes this (its unnamed namespace keeps the device code
// of flash_attention.cu and of the CPU emulation apart); under nvcc, or after
// tests/tensor/cuda_emulation/cuda_emulation.h.
#pragma once

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <mma.h>
#elif !defined(MOEFOLD_CUDA_EMULATION)
#error "flash_attention_kernels.cuh needs nvcc or the CUDA emulation of the CPU tests"
#endif

#include <climits>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "tensor/attention_plan.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = static_cast<int>(kFlashTile);  // query rows of a block, keys of a tile
constexpr int kFrag = 16;                            // WMMA's m, n and k
constexpr int kWarps = kTile / kFrag;                // one per 16 rows of the tile
constexpr int kBlockThreads = kWarps * kWarp;
constexpr int kLdP = kTile + 8;  // bf16 (16, 64) P and dS rows; the pads spread smem banks

template <int D>
constexpr int kLdTile = D + 8;  // bf16 rows of a Q, K, V or dO tile
// A warp's float (16, 64): scores, and products of D columns 64 at a time, so that at D 128
// the backward's shared memory (104 KiB) lets two blocks share an sm_90 (228 KiB).
constexpr int kLdScratch = kTile + 4;

using Bf16 = __nv_bfloat16;
using FragA = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, Bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, Bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, Bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, Bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

// Shared memory carved in order into 128-byte aligned pieces; with a null base it only counts,
// which is how the host sizes the launch.
struct SharedCarver {
  unsigned char* base;
  size_t bytes = 0;
  template <typename T>
  __host__ __device__ T* take(size_t count) {
    T* piece = reinterpret_cast<T*>(base + bytes);
    bytes += (count * sizeof(T) + 127) / 128 * 128;
    return piece;
  }
};

// The forward's Q tile passes through k on its way to the warps' registers.
template <int D>
struct ForwardShared {
  uint16_t *k, *v, *p;  // p: each warp's (16, kLdP)
  float* scratch;       // each warp's (16, kLdScratch)
  int32_t* k_pos;
  __host__ __device__ explicit ForwardShared(SharedCarver& c)
      : k(c.take<uint16_t>(kTile * kLdTile<D>)),
        v(c.take<uint16_t>(kTile * kLdTile<D>)),
        p(c.take<uint16_t>(kWarps * kFrag * kLdP)),
        scratch(c.take<float>(kWarps * kFrag * kLdScratch)),
        k_pos(c.take<int32_t>(kTile)) {}
};

template <int D>
struct BackwardShared {
  uint16_t *q, *dout, *k, *v;
  uint16_t* ds_t;  // dSᵀ of the whole tile, (keys, queries)
  uint16_t* p_t;   // each warp's Pᵀ, (16, kLdP)
  float* scratch;  // each warp's (16, kLdScratch)
  float *lse, *delta;
  int32_t *q_pos, *k_pos;
  __host__ __device__ explicit BackwardShared(SharedCarver& c)
      : q(c.take<uint16_t>(kTile * kLdTile<D>)),
        dout(c.take<uint16_t>(kTile * kLdTile<D>)),
        k(c.take<uint16_t>(kTile * kLdTile<D>)),
        v(c.take<uint16_t>(kTile * kLdTile<D>)),
        ds_t(c.take<uint16_t>(kTile * kLdP)),
        p_t(c.take<uint16_t>(kWarps * kFrag * kLdP)),
        scratch(c.take<float>(kWarps * kFrag * kLdScratch)),
        lse(c.take<float>(kTile)),
        delta(c.take<float>(kTile)),
        q_pos(c.take<int32_t>(kTile)),
        k_pos(c.take<int32_t>(kTile)) {}
};

template <template <int> class Shared, int D>
size_t shared_bytes() {
  SharedCarver carver{nullptr};
  Shared<D> layout(carver);
  return carver.bytes;
}

// The launches' grids: forward blocks (query tile, head, b), backward (key tile, kv head, b).
inline dim3 flash_forward_grid(size_t query_tiles, int64_t nh, int64_t B) {
  return dim3(static_cast<unsigned>(query_tiles), static_cast<unsigned>(nh),
              static_cast<unsigned>(B));
}
inline dim3 flash_backward_grid(int64_t kv_tiles, int64_t nkv, int64_t B) {
  return dim3(static_cast<unsigned>(kv_tiles), static_cast<unsigned>(nkv),
              static_cast<unsigned>(B));
}

// bf16 WMMA needs sm_80: for older targets the kernels compile to a trap, and
// flash_attention_fits never picks them where they were built so (its PTX version check).
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define MOEFOLD_FLASH_DEVICE_CODE 1
#endif

#ifdef MOEFOLD_FLASH_DEVICE_CODE
// `rows` rows of D bf16 (row stride `stride` elements) into a tile, zeros below them; 16-byte
// vectors (the caller checks the alignment).
template <int D>
__device__ void load_tile(uint16_t* tile, const uint16_t* src, int64_t stride, int64_t rows) {
  constexpr int kVectors = D / 8;
  for (int x = threadIdx.x; x < kTile * kVectors; x += blockDim.x) {
    const int r = x / kVectors, c = (x % kVectors) * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (r < rows) value = *reinterpret_cast<const uint4*>(src + r * stride + c);
    *reinterpret_cast<uint4*>(tile + r * kLdTile<D> + c) = value;
  }
}

// out (16, 64) = a (16, D) · bᵀ, b a (64, D) tile: the scores of 16 rows against a tile. a's
// 16 columns from kk·16 come from a_columns(fa, kk).
template <int D, class AColumns>
__device__ void columns_times_tile_t(AColumns a_columns, const uint16_t* b, float* out) {
  const auto* b16 = reinterpret_cast<const Bf16*>(b);
#pragma unroll
  for (int n = 0; n < kTile / kFrag; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / kFrag; ++kk) {
      FragA fa;
      FragBT fb;
      a_columns(fa, kk);
      wmma::load_matrix_sync(fb, b16 + n * kFrag * kLdTile<D> + kk * kFrag, kLdTile<D>);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(out + n * kFrag, c, kLdScratch, wmma::mem_row_major);
  }
}

// The same, with `a` 16 rows of a (64, D) tile in shared memory (leading dimension kLdTile<D>).
template <int D>
__device__ void rows_times_tile_t(const uint16_t* a, const uint16_t* b, float* out) {
  const auto* a16 = reinterpret_cast<const Bf16*>(a);
  columns_times_tile_t<D>(
      [&](FragA& fa, int kk) { wmma::load_matrix_sync(fa, a16 + kk * kFrag, kLdTile<D>); }, b, out);
}

// acc[n] += a (16, 64) · b (64, D), a row-major with leading dimension kLdP. The k steps are
// not unrolled: unrolled, ptxas hoists their b fragments beside the backward's dK and dV
// accumulators and spills (1.1 KiB a thread on sm_80 at D 128); rolled, nothing spills.
template <int D>
__device__ void rows_times_tile(const uint16_t* a, const uint16_t* b, FragC* acc) {
  const auto* a16 = reinterpret_cast<const Bf16*>(a);
  const auto* b16 = reinterpret_cast<const Bf16*>(b);
#pragma unroll 1
  for (int kk = 0; kk < kTile / kFrag; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, a16 + kk * kFrag, kLdP);
#pragma unroll
    for (int n = 0; n < D / kFrag; ++n) {
      FragB fb;
      wmma::load_matrix_sync(fb, b16 + kk * kFrag * kLdTile<D> + n * kFrag, kLdTile<D>);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// out (16, 64) = a (16, 64) · b (64, 64), b the first 64 columns from b of a (64, D) tile, a
// row-major with leading dimension kLdP or (kTransposedA) a column-major view of a (64, 16)
// block; one accumulator at a time, for products that are not kept in registers.
template <int D, bool kTransposedA>
__device__ void rows_times_tile_to(const uint16_t* a, const uint16_t* b, float* out) {
  const auto* a16 = reinterpret_cast<const Bf16*>(a);
  const auto* b16 = reinterpret_cast<const Bf16*>(b);
#pragma unroll
  for (int n = 0; n < kTile / kFrag; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.0f);
#pragma unroll
    for (int kk = 0; kk < kTile / kFrag; ++kk) {
      typename std::conditional<kTransposedA, FragAT, FragA>::type fa;
      wmma::load_matrix_sync(fa, kTransposedA ? a16 + kk * kFrag * kLdP : a16 + kk * kFrag, kLdP);
      FragB fb;
      wmma::load_matrix_sync(fb, b16 + kk * kFrag * kLdTile<D> + n * kFrag, kLdTile<D>);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(out + n * kFrag, c, kLdScratch, wmma::mem_row_major);
  }
}

// dst[c] += factor·acc's row r over D columns (each lane every other column), passed through
// the warp's scratch 64 columns at a time; dst bf16 (rounded once) or float32, null for a row
// past the end: dK and dV added into the gradients.
template <int D, typename G>
__device__ void add_accumulator_row(G* dst, const FragC* acc, float* scratch, float factor, int r,
                                    int half) {
#pragma unroll
  for (int first = 0; first < D; first += kTile) {
    __syncwarp();  // the scratch's previous columns are read
#pragma unroll
    for (int n = 0; n < kTile / kFrag; ++n) {
      wmma::store_matrix_sync(scratch + n * kFrag, acc[first / kFrag + n], kLdScratch,
                              wmma::mem_row_major);
    }
    __syncwarp();
    if (dst == nullptr) continue;
#pragma unroll
    for (int x = 0; x < kTile / 2; ++x) {
      const int c = 2 * x + half;
      store(dst, first + c, load(dst, first + c) + factor * scratch[r * kLdScratch + c]);
    }
  }
}

#endif  // MOEFOLD_FLASH_DEVICE_CODE

template <int D>
__global__ void __launch_bounds__(kBlockThreads)
    flash_forward_kernel(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* o,
                         float* lse, const int32_t* q_pos, const int32_t* k_pos,
                         const int32_t* key_tiles, int64_t Sq, int64_t Skv, int nh, int nkv,
                         float scale) {
#ifdef MOEFOLD_FLASH_DEVICE_CODE
  SharedCarver carver{dynamic_shared_memory()};
  const ForwardShared<D> s(carver);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int r = lane / 2, half = lane % 2;
  const int h = blockIdx.y, g = h / (nh / nkv);
  const int64_t b = blockIdx.z, i0 = int64_t{blockIdx.x} * kTile;
  const int64_t row = i0 + warp * kFrag + r;
  const int32_t position = row < Sq ? q_pos[row] : INT_MIN;  // rows past the end see nothing
  float* scratch = s.scratch + warp * kFrag * kLdScratch;
  uint16_t* p = s.p + warp * kFrag * kLdP;
  // This warp's 16 query rows stay in registers for every key tile (through k's memory), which
  // spares the block a Q tile of shared memory: three blocks share an sm_90 at D 128.
  load_tile<D>(s.k, q + ((b * Sq + i0) * nh + h) * D, int64_t{nh} * D, Sq - i0);
  __syncthreads();
  FragA q_rows[D / kFrag];
#pragma unroll
  for (int kk = 0; kk < D / kFrag; ++kk) {
    wmma::load_matrix_sync(
        q_rows[kk], reinterpret_cast<const Bf16*>(s.k) + warp * kFrag * kLdTile<D> + kk * kFrag,
        kLdTile<D>);
  }

  float acc[D / 2];
#pragma unroll
  for (int x = 0; x < D / 2; ++x) acc[x] = 0.0f;
  float running_max = -INFINITY, sum = 0.0f;
  const int tiles = key_tiles[blockIdx.x];
  for (int u = 0; u < tiles; ++u) {
    const int64_t j0 = int64_t{u} * kTile, keys = Skv - j0;
    __syncthreads();  // the previous tile (first: the Q rows) is read
    load_tile<D>(s.k, k + ((b * Skv + j0) * nkv + g) * D, int64_t{nkv} * D, keys);
    load_tile<D>(s.v, v + ((b * Skv + j0) * nkv + g) * D, int64_t{nkv} * D, keys);
    for (int x = threadIdx.x; x < kTile; x += blockDim.x) {
      s.k_pos[x] = x < keys ? k_pos[j0 + x] : 0;
    }
    __syncthreads();
    columns_times_tile_t<D>([&](FragA& fa, int kk) { fa = q_rows[kk]; }, s.k, scratch);
    __syncwarp();
    float* scores = scratch + r * kLdScratch;
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = half; c < kTile; c += 2) {
      const bool visible = c < keys && key_visible(position, s.k_pos[c]);  // none past the end
      scores[c] = visible ? scores[c] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, scores[c]);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const OnlineSoftmaxStep step = online_softmax_step(running_max, tile_max);
    running_max = step.max;
    float tile_sum = 0.0f;
#pragma unroll
    for (int c = half; c < kTile; c += 2) {
      const float weight = attention_probability(scores[c], running_max, scores[c] != -INFINITY);
      tile_sum += weight;
      p[r * kLdP + c] = float_to_bf16_bits(weight);
    }
    sum = sum * step.rescale + tile_sum + __shfl_xor_sync(0xffffffffu, tile_sum, 1);
#pragma unroll
    for (int first = 0; first < D; first += kTile) {
      __syncwarp();  // P, or the scratch's previous columns, are written and read
      rows_times_tile_to<D, false>(p, s.v + first, scratch);
      __syncwarp();
#pragma unroll
      for (int x = 0; x < kTile / 2; ++x) {
        float& a = acc[first / 2 + x];
        a = a * step.rescale + scratch[r * kLdScratch + 2 * x + half];
      }
    }
  }
  if (row >= Sq) return;
  const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
  uint16_t* out = o + ((b * Sq + row) * nh + h) * D;
#pragma unroll
  for (int x = 0; x < D / 2; ++x) out[2 * x + half] = float_to_bf16_bits(acc[x] * inverse);
  if (half == 0) lse[(b * nh + h) * Sq + row] = attention_lse(running_max, sum);
#else
  __trap();  // built for an architecture without bf16 WMMA: never launched there
#endif  // MOEFOLD_FLASH_DEVICE_CODE
}

template <int D, typename G>
__global__ void __launch_bounds__(kBlockThreads)
    flash_backward_kernel(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                          const uint16_t* v, const float* lse, const float* delta, float* dq32,
                          G* dk, G* dv, const int32_t* q_pos, const int32_t* k_pos,
                          const int32_t* key_tiles, int q_tiles, int64_t Sq, int64_t Skv, int nh,
                          int nkv, float scale) {
#ifdef MOEFOLD_FLASH_DEVICE_CODE
  SharedCarver carver{dynamic_shared_memory()};
  const BackwardShared<D> s(carver);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int r = lane / 2, half = lane % 2;
  const int u = blockIdx.x, g = blockIdx.y, group = nh / nkv;
  const int64_t b = blockIdx.z, j0 = int64_t{u} * kTile;
  const int key_row = warp * kFrag + r;  // this lane's key within the tile
  float* scratch = s.scratch + warp * kFrag * kLdScratch;
  uint16_t* p_t = s.p_t + warp * kFrag * kLdP;
  load_tile<D>(s.k, k + ((b * Skv + j0) * nkv + g) * D, int64_t{nkv} * D, Skv - j0);
  load_tile<D>(s.v, v + ((b * Skv + j0) * nkv + g) * D, int64_t{nkv} * D, Skv - j0);
  for (int x = threadIdx.x; x < kTile; x += blockDim.x) {
    s.k_pos[x] = j0 + x < Skv ? k_pos[j0 + x] : 0;
  }
  FragC dk_acc[D / kFrag], dv_acc[D / kFrag];
#pragma unroll
  for (int n = 0; n < D / kFrag; ++n) {
    wmma::fill_fragment(dk_acc[n], 0.0f);
    wmma::fill_fragment(dv_acc[n], 0.0f);
  }
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int t = 0; t < q_tiles; ++t) {
      if (key_tiles[t] <= u) continue;  // no row of query tile t sees this key tile
      const int64_t i0 = int64_t{t} * kTile, rows = Sq - i0;
      __syncthreads();  // the previous query tile is read
      load_tile<D>(s.q, q + ((b * Sq + i0) * nh + h) * D, int64_t{nh} * D, rows);
      load_tile<D>(s.dout, dout + ((b * Sq + i0) * nh + h) * D, int64_t{nh} * D, rows);
      for (int x = threadIdx.x; x < kTile; x += blockDim.x) {
        const bool in = x < rows;
        s.q_pos[x] = in ? q_pos[i0 + x] : INT_MIN;
        s.lse[x] = in ? lse[(b * nh + h) * Sq + i0 + x] : -INFINITY;
        s.delta[x] = in ? delta[(b * nh + h) * Sq + i0 + x] : 0.0f;
      }
      __syncthreads();
      // Pᵀ (this warp's 16 keys, the tile's queries) from Sᵀ = K Qᵀ and lse.
      rows_times_tile_t<D>(s.k + warp * kFrag * kLdTile<D>, s.q, scratch);
      __syncwarp();
      const bool key_in = j0 + key_row < Skv;  // keys past the end are seen by no query
      const int32_t key_position = s.k_pos[key_row];
      float weight[kTile / 2];
#pragma unroll
      for (int x = 0; x < kTile / 2; ++x) {
        const int c = 2 * x + half;
        weight[x] = attention_probability(scratch[r * kLdScratch + c] * scale, s.lse[c],
                                          key_in && key_visible(s.q_pos[c], key_position));
        p_t[r * kLdP + c] = float_to_bf16_bits(weight[x]);
      }
      __syncwarp();
      // dSᵀ = Pᵀ ⊙ (dPᵀ − delta), dPᵀ = V dOᵀ.
      rows_times_tile_t<D>(s.v + warp * kFrag * kLdTile<D>, s.dout, scratch);
      __syncwarp();
#pragma unroll
      for (int x = 0; x < kTile / 2; ++x) {
        const int c = 2 * x + half;
        s.ds_t[key_row * kLdP + c] = float_to_bf16_bits(
            softmax_gradient(scratch[r * kLdScratch + c], weight[x], s.delta[c]));
      }
      __syncwarp();
      rows_times_tile<D>(p_t, s.dout, dv_acc);
      rows_times_tile<D>(s.ds_t + warp * kFrag * kLdP, s.q, dk_acc);
      __syncthreads();  // every warp's dSᵀ rows are written
      // dQ of this warp's 16 queries: dS (16, keys) · K, dS read as a view of dSᵀ.
      const int64_t query = i0 + warp * kFrag + r;
#pragma unroll
      for (int first = 0; first < D; first += kTile) {
        __syncwarp();  // the scratch's previous columns are read
        rows_times_tile_to<D, true>(s.ds_t + warp * kFrag, s.k + first, scratch);
        __syncwarp();
        if (query >= Sq) continue;
        float* dst = dq32 + ((b * Sq + query) * nh + h) * D + first;
#pragma unroll 8
        for (int x = 0; x < kTile / 2; ++x) {
          const int c = 2 * x + half;
          atomicAdd(dst + c, scale * scratch[r * kLdScratch + c]);
        }
      }
    }
  }
  const int64_t key = j0 + key_row;
  const bool key_in = key < Skv;
  add_accumulator_row<D, G>(key_in ? dk + ((b * Skv + key) * nkv + g) * D : nullptr, dk_acc,
                            scratch, scale, r, half);
  add_accumulator_row<D, G>(key_in ? dv + ((b * Skv + key) * nkv + g) * D : nullptr, dv_acc,
                            scratch, 1.0f, r, half);
#else
  __trap();  // built for an architecture without bf16 WMMA: never launched there
#endif  // MOEFOLD_FLASH_DEVICE_CODE
}

}  // namespace
}  // namespace moefold::cuda
