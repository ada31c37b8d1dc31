// bf16 attention on tensor cores (MODEL.md "Mixed precision": bf16 q, k, v, o; float32 scores,
// softmax statistics and lse). Built from cuBLAS bf16 GEMMs over chunks of query rows, one
// (sequence, head) at a time, with a row kernel in between:
//   forward   S = scale·Q Kᵀ (float32), P = exp(S − lse) masked by positions (bf16), O = P V;
//   backward  S again, P from lse, dP = dO Vᵀ, dV += Pᵀ dO, dS = P ⊙ (dP − rowsum(dO ⊙ O)),
//             dQ += scale·dS K, dK += scale·dSᵀ Q.
// The row formulas are tensor/row_math.h's (attention_lse, attention_probability,
// softmax_gradient), tested on CPU. dQ, dK and dV accumulate in float32 copies and are rounded
// once at the end. Memory is bounded by the chunk: about 10 bytes per (query row, key) in it.
// A chunk scores only the keys up to the last one it can see (attention_visible_prefix), so a
// causal sequence skips most hidden keys; the mask inside that prefix is applied per score.
#include <algorithm>
#include <cstdint>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int64_t kChunkBytes = int64_t{256} << 20;  // scratch for S, P and dP of one chunk
constexpr int64_t kMaxChunkRows = 512;  // small enough chunks for causal skipping to pay

// One block per query row r of a chunk (scores `s` (rows, Skv) float32): with kComputeLse the
// row's lse from the visible scores (written to lse_out[r]), else lse_in[r]; then
// p = attention_probability(s, lse, visible) in bf16.
template <bool kComputeLse>
__global__ void probabilities_kernel(const float* s, uint16_t* p, const float* lse_in,
                                     float* lse_out, const int32_t* q_pos, const int32_t* k_pos,
                                     int64_t Skv) {
  __shared__ float shared[kWarp];
  const int64_t r = blockIdx.x;
  const float* row = s + r * Skv;
  const int32_t position = q_pos[r];
  float row_lse;
  if constexpr (kComputeLse) {
    float local_max = -INFINITY;
    for (int64_t j = threadIdx.x; j < Skv; j += blockDim.x) {
      if (key_visible(position, k_pos[j])) local_max = fmaxf(local_max, row[j]);
    }
    const float row_max = block_max(local_max, shared);
    float local_sum = 0.0f;
    if (row_max != -INFINITY) {
      for (int64_t j = threadIdx.x; j < Skv; j += blockDim.x) {
        if (key_visible(position, k_pos[j])) local_sum += expf(row[j] - row_max);
      }
    }
    row_lse = attention_lse(row_max, block_sum(local_sum, shared));
    if (threadIdx.x == 0) lse_out[r] = row_lse;
  } else {
    row_lse = lse_in[r];
  }
  for (int64_t j = threadIdx.x; j < Skv; j += blockDim.x) {
    const float value = attention_probability(row[j], row_lse, key_visible(position, k_pos[j]));
    p[r * Skv + j] = float_to_bf16_bits(value);
  }
}

// dS = P ⊙ (dP − delta) in bf16, P recomputed in float32 from the scores and lse; one block per
// query row of the chunk.
__global__ void score_gradients_kernel(const float* s, const float* dp, const float* lse,
                                       const float* delta, uint16_t* ds, const int32_t* q_pos,
                                       const int32_t* k_pos, int64_t Skv) {
  const int64_t r = blockIdx.x;
  const int32_t position = q_pos[r];
  const float row_lse = lse[r], row_delta = delta[r];
  for (int64_t j = threadIdx.x; j < Skv; j += blockDim.x) {
    const int64_t at = r * Skv + j;
    const float p = attention_probability(s[at], row_lse, key_visible(position, k_pos[j]));
    ds[at] = float_to_bf16_bits(softmax_gradient(dp[at], p, row_delta));
  }
}

// delta[(b·nh + h)·Sq + i] = Σ dO ⊙ O over the head's d values; one warp per (b, i, h) row.
__global__ void delta_kernel(const uint16_t* dout, const uint16_t* o, float* delta, int64_t B,
                             int64_t Sq, int64_t nh, int64_t d) {
  const int64_t row = blockIdx.x * int64_t{blockDim.x / kWarp} + threadIdx.x / kWarp;
  if (row >= B * Sq * nh) return;
  float partial = 0.0f;
  for (int64_t c = threadIdx.x % kWarp; c < d; c += kWarp) {
    partial += bf16_bits_to_float(dout[row * d + c]) * bf16_bits_to_float(o[row * d + c]);
  }
  const float total = warp_sum(partial);
  const int64_t h = row % nh, i = (row / nh) % Sq, b = row / (nh * Sq);
  if (threadIdx.x % kWarp == 0) delta[(b * nh + h) * Sq + i] = total;
}

// Query rows per chunk: `bytes_per_score` bytes of scratch per (row, key), within kChunkBytes.
int64_t chunk_rows(int64_t Sq, int64_t Skv, int64_t bytes_per_score) {
  const int64_t rows = kChunkBytes / std::max<int64_t>(Skv * bytes_per_score, 1);
  return std::clamp<int64_t>(rows, 1, std::clamp<int64_t>(Sq, 1, kMaxChunkRows));
}

void check_shape(int64_t nh, int64_t nkv, int64_t d) {
  MOEFOLD_CHECK(nkv > 0 && nh % nkv == 0, "heads " << nh << " not divisible by kv heads " << nkv);
  MOEFOLD_CHECK(d > 0, "attention head dim " << d);
}

}  // namespace

void CudaBackend::attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                         uint16_t* o, float* lse, const int32_t* q_pos,
                                         const int32_t* k_pos, int64_t B, int64_t Sq,
                                         int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  check_shape(nh, nkv, d);
  if (B == 0 || Sq == 0) return;
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  const int64_t rows = chunk_rows(Sq, Skv, sizeof(float) + sizeof(uint16_t));
  Scratch scores(*this, sizeof(float) * rows * Skv), probs(*this, sizeof(uint16_t) * rows * Skv);
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t q_ld = nh * d, kv_ld = nkv * d;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h / (nh / nkv);
      const uint16_t* k_bh = k + b * Skv * kv_ld + kvh * d;
      const uint16_t* v_bh = v + b * Skv * kv_ld + kvh * d;
      for (int64_t i0 = 0; i0 < Sq; i0 += rows) {
        const int64_t c = std::min(rows, Sq - i0);
        const int64_t L = attention_visible_prefix(q_pos + i0, c, k_pos, Skv);
        const int64_t q_at = (b * Sq + i0) * q_ld + h * d;
        gemm(false, true, c, L, d, scale, bf16_in(q + q_at), q_ld, bf16_in(k_bh), kv_ld, 0.0f,
             f32_out(scores.as<float>()), L);
        probabilities_kernel<true><<<static_cast<unsigned>(c), kRowThreads, 0, stream_>>>(
            scores.as<float>(), probs.as<uint16_t>(), nullptr, lse + (b * nh + h) * Sq + i0,
            q_pos_dev->as<int32_t>() + i0, k_pos_dev->as<int32_t>(), L);
        MOEFOLD_CUDA_CHECK_LAUNCH();
        gemm(false, false, c, d, L, 1.0f, bf16_in(probs.as<uint16_t>()), L, bf16_in(v_bh),
             kv_ld, 0.0f, bf16_out(o + q_at), q_ld);
      }
    }
  }
}

void CudaBackend::attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                          const uint16_t* k, const uint16_t* v,
                                          const uint16_t* o, const float* lse, uint16_t* dq,
                                          uint16_t* dk, uint16_t* dv, const int32_t* q_pos,
                                          const int32_t* k_pos, int64_t B, int64_t Sq,
                                          int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  check_shape(nh, nkv, d);
  if (B == 0 || Sq == 0 || Skv == 0) return;
  auto q_pos_dev = upload(q_pos, Sq);
  auto k_pos_dev = upload(k_pos, Skv);
  const int64_t q_size = B * Sq * nh * d, kv_size = B * Skv * nkv * d;
  // The gradients accumulate in float32 copies, rounded to bf16 once at the end.
  Scratch dq32(*this, sizeof(float) * q_size), dk32(*this, sizeof(float) * kv_size);
  Scratch dv32(*this, sizeof(float) * kv_size), delta(*this, sizeof(float) * B * nh * Sq);
  widen_bf16(dq, dq32.as<float>(), q_size);
  widen_bf16(dk, dk32.as<float>(), kv_size);
  widen_bf16(dv, dv32.as<float>(), kv_size);
  constexpr int warps = kThreads / kWarp;
  delta_kernel<<<static_cast<unsigned>((B * Sq * nh + warps - 1) / warps), kThreads, 0,
                 stream_>>>(dout, o, delta.as<float>(), B, Sq, nh, d);
  MOEFOLD_CUDA_CHECK_LAUNCH();

  const int64_t rows = chunk_rows(Sq, Skv, 2 * sizeof(float) + sizeof(uint16_t));
  Scratch scores(*this, sizeof(float) * rows * Skv), dp(*this, sizeof(float) * rows * Skv);
  Scratch probs(*this, sizeof(uint16_t) * rows * Skv);  // P, then dS
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t q_ld = nh * d, kv_ld = nkv * d;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h / (nh / nkv), kv_at = b * Skv * kv_ld + kvh * d;
      for (int64_t i0 = 0; i0 < Sq; i0 += rows) {
        const int64_t c = std::min(rows, Sq - i0);
        const int64_t L = attention_visible_prefix(q_pos + i0, c, k_pos, Skv);
        if (L == 0) continue;  // no key visible to the chunk: no gradient
        const int64_t q_at = (b * Sq + i0) * q_ld + h * d, l_at = (b * nh + h) * Sq + i0;
        const int32_t* q_pos_chunk = q_pos_dev->as<int32_t>() + i0;
        gemm(false, true, c, L, d, scale, bf16_in(q + q_at), q_ld, bf16_in(k + kv_at), kv_ld,
             0.0f, f32_out(scores.as<float>()), L);
        probabilities_kernel<false><<<static_cast<unsigned>(c), kRowThreads, 0, stream_>>>(
            scores.as<float>(), probs.as<uint16_t>(), lse + l_at, nullptr, q_pos_chunk,
            k_pos_dev->as<int32_t>(), L);
        MOEFOLD_CUDA_CHECK_LAUNCH();
        gemm(false, true, c, L, d, 1.0f, bf16_in(dout + q_at), q_ld, bf16_in(v + kv_at), kv_ld,
             0.0f, f32_out(dp.as<float>()), L);
        gemm(true, false, L, d, c, 1.0f, bf16_in(probs.as<uint16_t>()), L, bf16_in(dout + q_at),
             q_ld, 1.0f, f32_out(dv32.as<float>() + kv_at), kv_ld);
        score_gradients_kernel<<<static_cast<unsigned>(c), kRowThreads, 0, stream_>>>(
            scores.as<float>(), dp.as<float>(), lse + l_at, delta.as<float>() + l_at,
            probs.as<uint16_t>(), q_pos_chunk, k_pos_dev->as<int32_t>(), L);
        MOEFOLD_CUDA_CHECK_LAUNCH();
        gemm(false, false, c, d, L, scale, bf16_in(probs.as<uint16_t>()), L, bf16_in(k + kv_at),
             kv_ld, 1.0f, f32_out(dq32.as<float>() + q_at), q_ld);
        gemm(true, false, L, d, c, scale, bf16_in(probs.as<uint16_t>()), L, bf16_in(q + q_at),
             q_ld, 1.0f, f32_out(dk32.as<float>() + kv_at), kv_ld);
      }
    }
  }
  round_to_bf16(dq32.as<float>(), dq, q_size);
  round_to_bf16(dk32.as<float>(), dk, kv_size);
  round_to_bf16(dv32.as<float>(), dv, kv_size);
}

}  // namespace moefold::cuda
