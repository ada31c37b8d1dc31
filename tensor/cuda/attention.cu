// Flash-style float32 attention on the CUDA backend (GQA, causal by positions, lse out for ring
// merging). cuDNN's fused attention has no float32 path, so these are own kernels: one warp per
// query row (forward, dq) or per key row (dk, dv), each lane holding d/32 of the head's values,
// with the online softmax of the forward and P recomputed from lse in the backward. Sums are
// over keys (or queries) in order, with no atomics: results are deterministic. Simple rather
// than fast (no tensor cores, no shared-memory tiles): bf16 tiles are the next step.
#include <cstdint>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

constexpr int kMaxPerLane = 8;  // head dims up to 8·32 = 256
constexpr int kWarpsPerBlock = 4;

struct Dims {
  int64_t B, Sq, Skv, nh, nkv, d;
  float scale;
  __device__ const float* q_row(const float* q, int64_t b, int64_t i, int64_t h) const {
    return q + ((b * Sq + i) * nh + h) * d;
  }
  __device__ const float* kv_row(const float* k, int64_t b, int64_t j, int64_t kvh) const {
    return k + ((b * Skv + j) * nkv + kvh) * d;
  }
  __device__ int64_t lse_index(int64_t b, int64_t h, int64_t i) const {
    return (b * nh + h) * Sq + i;
  }
};

// This lane's share of a d-vector: elements lane, lane + 32, ...
__device__ __forceinline__ void load_lane(const float* row, int64_t d, float* out) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t c = lane + int64_t{t} * kWarp;
    out[t] = c < d ? row[c] : 0.0f;
  }
}

__device__ __forceinline__ float warp_dot(const float* mine, const float* row, int64_t d) {
  const int lane = threadIdx.x % kWarp;
  float partial = 0.0f;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t c = lane + int64_t{t} * kWarp;
    if (c < d) partial += mine[t] * row[c];
  }
  return warp_sum(partial);
}

// grid (⌈Sq/4⌉, nh, B): one warp per query row.
__global__ void attention_forward_kernel(const float* q, const float* k, const float* v, float* o,
                                         float* lse, const int32_t* q_pos, const int32_t* k_pos,
                                         Dims dims) {
  const int64_t i = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
  if (i >= dims.Sq) return;
  const int64_t h = blockIdx.y, b = blockIdx.z, kvh = h / (dims.nh / dims.nkv);
  const int lane = threadIdx.x % kWarp;
  float q_lane[kMaxPerLane], acc[kMaxPerLane] = {};
  load_lane(dims.q_row(q, b, i, h), dims.d, q_lane);
  float row_max = -INFINITY, row_sum = 0.0f;
  const int32_t position = q_pos[i];
  for (int64_t j = 0; j < dims.Skv; ++j) {
    if (!key_visible(position, k_pos[j])) continue;
    const float s = warp_dot(q_lane, dims.kv_row(k, b, j, kvh), dims.d) * dims.scale;
    const float new_max = fmaxf(row_max, s);
    const float correction = expf(row_max - new_max);
    const float p = expf(s - new_max);
    row_sum = row_sum * correction + p;
    row_max = new_max;
    const float* v_row = dims.kv_row(v, b, j, kvh);
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t c = lane + int64_t{t} * kWarp;
      acc[t] = acc[t] * correction + (c < dims.d ? p * v_row[c] : 0.0f);
    }
  }
  float* o_row = o + ((b * dims.Sq + i) * dims.nh + h) * dims.d;
  const float inv = row_sum == 0.0f ? 0.0f : 1.0f / row_sum;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t c = lane + int64_t{t} * kWarp;
    if (c < dims.d) o_row[c] = acc[t] * inv;
  }
  if (lane == 0) {
    lse[dims.lse_index(b, h, i)] = row_sum == 0.0f ? -INFINITY : row_max + logf(row_sum);
  }
}

// delta = rowsum(dO ⊙ O), one warp per (b, h, i); grid as the forward's.
__global__ void attention_delta_kernel(const float* dout, const float* o, float* delta,
                                       Dims dims) {
  const int64_t i = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
  if (i >= dims.Sq) return;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  float dout_lane[kMaxPerLane];
  load_lane(dims.q_row(dout, b, i, h), dims.d, dout_lane);
  const float value = warp_dot(dout_lane, dims.q_row(o, b, i, h), dims.d);
  if (threadIdx.x % kWarp == 0) delta[dims.lse_index(b, h, i)] = value;
}

// dq += scale·Σ_j dS_ij k_j with P = exp(S − lse), dS = P ⊙ (dO·v_j − delta).
__global__ void attention_dq_kernel(const float* dout, const float* q, const float* k,
                                    const float* v, const float* lse, const float* delta,
                                    float* dq, const int32_t* q_pos, const int32_t* k_pos,
                                    Dims dims) {
  const int64_t i = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
  if (i >= dims.Sq) return;
  const int64_t h = blockIdx.y, b = blockIdx.z, kvh = h / (dims.nh / dims.nkv);
  const int lane = threadIdx.x % kWarp;
  const float row_lse = lse[dims.lse_index(b, h, i)];
  if (row_lse == -INFINITY) return;  // no visible key: no gradient
  const float row_delta = delta[dims.lse_index(b, h, i)];
  float q_lane[kMaxPerLane], dout_lane[kMaxPerLane], acc[kMaxPerLane] = {};
  load_lane(dims.q_row(q, b, i, h), dims.d, q_lane);
  load_lane(dims.q_row(dout, b, i, h), dims.d, dout_lane);
  const int32_t position = q_pos[i];
  for (int64_t j = 0; j < dims.Skv; ++j) {
    if (!key_visible(position, k_pos[j])) continue;
    const float* k_row = dims.kv_row(k, b, j, kvh);
    const float p = expf(warp_dot(q_lane, k_row, dims.d) * dims.scale - row_lse);
    const float dp = warp_dot(dout_lane, dims.kv_row(v, b, j, kvh), dims.d);
    const float ds = softmax_gradient(dp, p, row_delta);
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t c = lane + int64_t{t} * kWarp;
      if (c < dims.d) acc[t] += ds * k_row[c];
    }
  }
  float* dq_row = dq + ((b * dims.Sq + i) * dims.nh + h) * dims.d;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t c = lane + int64_t{t} * kWarp;
    if (c < dims.d) dq_row[c] += dims.scale * acc[t];
  }
}

// grid (⌈Skv/4⌉, nkv, B): one warp per key row j of kv head kvh, over the heads sharing it:
// dv += Σ P_ij dO_i, dk += scale·Σ dS_ij q_i.
__global__ void attention_dkv_kernel(const float* dout, const float* q, const float* k,
                                     const float* v, const float* lse, const float* delta,
                                     float* dk, float* dv, const int32_t* q_pos,
                                     const int32_t* k_pos, Dims dims) {
  const int64_t j = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
  if (j >= dims.Skv) return;
  const int64_t kvh = blockIdx.y, b = blockIdx.z, group = dims.nh / dims.nkv;
  const int lane = threadIdx.x % kWarp;
  float k_lane[kMaxPerLane], v_lane[kMaxPerLane], dk_acc[kMaxPerLane] = {},
        dv_acc[kMaxPerLane] = {};
  load_lane(dims.kv_row(k, b, j, kvh), dims.d, k_lane);
  load_lane(dims.kv_row(v, b, j, kvh), dims.d, v_lane);
  const int32_t position = k_pos[j];
  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int64_t i = 0; i < dims.Sq; ++i) {
      if (!key_visible(q_pos[i], position)) continue;
      const float row_lse = lse[dims.lse_index(b, h, i)];
      if (row_lse == -INFINITY) continue;
      const float* q_row = dims.q_row(q, b, i, h);
      const float* dout_row = dims.q_row(dout, b, i, h);
      const float p = expf(warp_dot(k_lane, q_row, dims.d) * dims.scale - row_lse);
      const float dp = warp_dot(v_lane, dout_row, dims.d);
      const float ds = softmax_gradient(dp, p, delta[dims.lse_index(b, h, i)]);
#pragma unroll
      for (int t = 0; t < kMaxPerLane; ++t) {
        const int64_t c = lane + int64_t{t} * kWarp;
        if (c < dims.d) {
          dv_acc[t] += p * dout_row[c];
          dk_acc[t] += ds * q_row[c];
        }
      }
    }
  }
  float* dk_row = dk + ((b * dims.Skv + j) * dims.nkv + kvh) * dims.d;
  float* dv_row = dv + ((b * dims.Skv + j) * dims.nkv + kvh) * dims.d;
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t c = lane + int64_t{t} * kWarp;
    if (c < dims.d) {
      dk_row[c] += dims.scale * dk_acc[t];
      dv_row[c] += dv_acc[t];
    }
  }
}

// One warp per (b, s, h) row: o_a, lse_a ← the merge of (o_a, lse_a) and (o_b, lse_b); o float32
// or bf16 (merged in float32, rounded once).
template <typename T>
__global__ void attention_merge_kernel(T* o_a, float* lse_a, const T* o_b, const float* lse_b,
                                       int64_t B, int64_t Sq, int64_t nh, int64_t d) {
  const int64_t row = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / kWarp;
  if (row >= B * Sq * nh) return;
  const int64_t h = row % nh, s = (row / nh) % Sq, b = row / (nh * Sq);
  const int64_t l = (b * nh + h) * Sq + s;
  const float la = lse_a[l], lb = lse_b[l];
  if (lb == -INFINITY) return;
  const AttentionMergeWeights m = attention_merge_weights(la, lb);
  T* oa = o_a + row * d;
  const T* ob = o_b + row * d;
  for (int64_t c = threadIdx.x % kWarp; c < d; c += kWarp) {
    const float merged = m.weight_a * load(oa, c) + m.weight_b * load(ob, c);
    store(oa, c, la == -INFINITY ? load(ob, c) : merged);
  }
  __syncwarp();
  if (threadIdx.x % kWarp == 0) lse_a[l] = m.lse;
}

Dims make_dims(int64_t B, int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  MOEFOLD_CHECK(nkv > 0 && nh % nkv == 0, "heads " << nh << " not divisible by kv heads " << nkv);
  MOEFOLD_CHECK(d > 0 && d <= kMaxPerLane * kWarp,
                "not supported yet on cuda: attention head dim " << d << " (at most "
                                                                 << kMaxPerLane * kWarp << ")");
  MOEFOLD_CHECK(nh <= 65535 && B <= 65535, "attention grid too large: " << nh << " heads, " << B
                                                                        << " sequences");
  return {B, Sq, Skv, nh, nkv, d, 1.0f / sqrtf(static_cast<float>(d))};
}

dim3 rows_grid(int64_t rows, int64_t heads, int64_t B) {
  return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock),
              static_cast<unsigned>(heads), static_cast<unsigned>(B));
}

}  // namespace

void CudaBackend::attention_forward(const float* q, const float* k, const float* v, float* o,
                                    float* lse, const int32_t* q_pos, const int32_t* k_pos,
                                    int64_t B, int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                                    int64_t d) {
  const Dims dims = make_dims(B, Sq, Skv, nh, nkv, d);
  if (B == 0 || Sq == 0 || nh == 0) return;  // an empty grid dimension is a launch error
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  attention_forward_kernel<<<rows_grid(Sq, nh, B), kWarpsPerBlock * kWarp, 0, stream_>>>(
      q, k, v, o, lse, q_pos_dev->as<int32_t>(), k_pos_dev->as<int32_t>(), dims);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::attention_backward(const float* dout, const float* q, const float* k,
                                     const float* v, const float* o, const float* lse, float* dq,
                                     float* dk, float* dv, const int32_t* q_pos,
                                     const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                     int64_t nh, int64_t nkv, int64_t d) {
  const Dims dims = make_dims(B, Sq, Skv, nh, nkv, d);
  if (B == 0 || Sq == 0 || Skv == 0 || nh == 0) return;
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  Scratch delta(*this, sizeof(float) * B * nh * Sq);
  constexpr int threads = kWarpsPerBlock * kWarp;
  attention_delta_kernel<<<rows_grid(Sq, nh, B), threads, 0, stream_>>>(dout, o,
                                                                        delta.as<float>(), dims);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  attention_dq_kernel<<<rows_grid(Sq, nh, B), threads, 0, stream_>>>(
      dout, q, k, v, lse, delta.as<float>(), dq, q_pos_dev->as<int32_t>(),
      k_pos_dev->as<int32_t>(), dims);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  attention_dkv_kernel<<<rows_grid(Skv, nkv, B), threads, 0, stream_>>>(
      dout, q, k, v, lse, delta.as<float>(), dk, dv, q_pos_dev->as<int32_t>(),
      k_pos_dev->as<int32_t>(), dims);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

namespace {

template <typename T>
void merge_attention(cudaStream_t stream, T* o_a, float* lse_a, const T* o_b,
                     const float* lse_b, int64_t B, int64_t Sq, int64_t nh, int64_t d) {
  const int64_t rows = B * Sq * nh;
  if (rows == 0) return;
  attention_merge_kernel<T><<<static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock),
                           kWarpsPerBlock * kWarp, 0, stream>>>(o_a, lse_a, o_b, lse_b, B, Sq,
                                                                nh, d);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b,
                                  int64_t B, int64_t Sq, int64_t nh, int64_t d) {
  merge_attention(stream_, o_a, lse_a, o_b, lse_b, B, Sq, nh, d);
}

void CudaBackend::attention_merge_bf16(uint16_t* o_a, float* lse_a, const uint16_t* o_b,
                                       const float* lse_b, int64_t B, int64_t Sq, int64_t nh,
                                       int64_t d) {
  merge_attention(stream_, o_a, lse_a, o_b, lse_b, B, Sq, nh, d);
}

}  // namespace moefold::cuda
