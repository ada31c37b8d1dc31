// bf16 attention on tensor cores (MODEL.md "Mixed precision": bf16 q, k, v, o; float32 scores,
// softmax statistics and lse): the flash kernels (flash_attention.cu) where they fit and, by
// default, time faster for the shape (tensor/attention_path_tuner.h), else the executor of
// tensor/attention_plan.h's plans, which say which cuBLAS bf16 GEMMs and row kernels
// run over each chunk of query rows (and which the CPU tests execute too). The row kernels use
// row_math.h's formulas (attention_lse, attention_probability, softmax_gradient), tested on CPU.
// dQ, dK and dV accumulate in float32 (copies of bf16 ones, rounded once at the end). Memory is
// bounded by the chunk: about 10 bytes per (query row, key) in it.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "tensor/attention_plan.h"
#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int64_t kChunkBytes = int64_t{256} << 20;  // scratch for S, P and dP of one chunk
constexpr int64_t kMaxChunkRows = 512;  // chunks small enough for causal skipping to pay

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

// ⌈a/b⌉ blocks of b.
unsigned blocks_of(int64_t a, int64_t b) { return static_cast<unsigned>((a + b - 1) / b); }

}  // namespace

void CudaBackend::run_attention_plan(const std::vector<AttentionStep>& plan,
                                     const AttentionBuffers& buffers, const int32_t* q_pos,
                                     const int32_t* k_pos, const float* lse_in, float* lse_out,
                                     const float* delta) {
  const auto in = [&](AttentionBuffer buffer, int64_t at) {
    const int i = static_cast<int>(buffer);
    return advance(GemmInput{buffers.data[i], buffers.dtype[i]}, at);
  };
  const auto out = [&](AttentionBuffer buffer, int64_t at) {
    const int i = static_cast<int>(buffer);
    return advance(GemmOutput{buffers.data[i], buffers.dtype[i]}, at);
  };
  const auto* scores = static_cast<const float*>(buffers.data[int(AttentionBuffer::kScores)]);
  const auto* dp = static_cast<const float*>(buffers.data[int(AttentionBuffer::kDp)]);
  auto* probs = static_cast<uint16_t*>(buffers.data[int(AttentionBuffer::kProbs)]);
  for (const AttentionStep& step : plan) {
    if (step.is_gemm) {
      const AttentionGemm& g = step.gemm;
      gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, g.alpha, in(g.a, g.a_at), g.lda, in(g.b, g.b_at),
           g.ldb, g.beta, out(g.c, g.c_at), g.ldc);
      continue;
    }
    const unsigned grid = static_cast<unsigned>(step.rows);
    const int32_t* q_chunk = q_pos + step.first_query;
    switch (step.row_op) {
      case AttentionRowOp::kSoftmax:
        probabilities_kernel<true><<<grid, kRowThreads, 0, stream_>>>(
            scores, probs, nullptr, lse_out + step.lse_at, q_chunk, k_pos, step.keys);
        break;
      case AttentionRowOp::kProbabilities:
        probabilities_kernel<false><<<grid, kRowThreads, 0, stream_>>>(
            scores, probs, lse_in + step.lse_at, nullptr, q_chunk, k_pos, step.keys);
        break;
      case AttentionRowOp::kScoreGradients:
        score_gradients_kernel<<<grid, kRowThreads, 0, stream_>>>(
            scores, dp, lse_in + step.lse_at, delta + step.lse_at, probs, q_chunk, k_pos,
            step.keys);
        break;
    }
    MOEFOLD_CUDA_CHECK_LAUNCH();
  }
}

bool CudaBackend::prefer_flash(const AttentionShapeClass& shape,
                               const std::function<void(AttentionPath)>& trial) {
  if (flash_mode_ == FlashAttentionMode::kAlways) return true;
  if (const std::optional<AttentionPath> known = attention_tuner_.decided(shape)) {
    return *known == AttentionPath::kFlash;
  }
  double flash = 0, chunked = 0;
  try {
    flash = seconds_on_stream([&] { trial(AttentionPath::kFlash); });
    chunked = seconds_on_stream([&] { trial(AttentionPath::kChunked); });
  } catch (const DeviceOutOfMemory&) {  // the trials' scratch comes on top of the call's own
    return attention_tuner_.decide_untimed(shape, "out of memory") == AttentionPath::kFlash;
  }
  return attention_tuner_.decide(shape, flash, chunked) == AttentionPath::kFlash;
}

double CudaBackend::seconds_on_stream(const std::function<void()>& run) {
  run();  // warm-up: module loading, cuBLAS's kernel choice, the pool's growth
  struct Event {
    Event() { MOEFOLD_CUDA_CHECK(cudaEventCreate(&event)); }
    ~Event() { cudaEventDestroy(event); }
    cudaEvent_t event = nullptr;
  } start, stop;
  MOEFOLD_CUDA_CHECK(cudaEventRecord(start.event, stream_));
  run();
  MOEFOLD_CUDA_CHECK(cudaEventRecord(stop.event, stream_));
  MOEFOLD_CUDA_CHECK(cudaEventSynchronize(stop.event));
  float milliseconds = 0;
  MOEFOLD_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start.event, stop.event));
  return milliseconds * 1e-3;
}

void CudaBackend::attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                         uint16_t* o, float* lse, const int32_t* q_pos,
                                         const int32_t* k_pos, int64_t B, int64_t Sq,
                                         int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  const AttentionDims dims{B, Sq, Skv, nh, nkv, d};
  const auto flash_into = [&](uint16_t* o_out, float* lse_out) {
    flash_attention_forward_bf16(q, k, v, o_out, lse_out, q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
  };
  const bool flash =
      flash_attention_fits(d, nh, nkv, B, {q, k, v}) &&
      (Sq == 0 || Skv == 0 ||  // nothing to time
       prefer_flash(attention_shape_class(false, dims, false), [&](AttentionPath path) {
        Scratch o_trial(*this, sizeof(uint16_t) * B * Sq * nh * d);
        Scratch lse_trial(*this, sizeof(float) * B * nh * Sq);
        if (path == AttentionPath::kFlash) {
          flash_into(o_trial.as<uint16_t>(), lse_trial.as<float>());
        } else {
          chunked_attention_forward_bf16(q, k, v, o_trial.as<uint16_t>(), lse_trial.as<float>(),
                                         q_pos, k_pos, dims);
        }
      }));
  if (flash) {
    flash_into(o, lse);
  } else {
    chunked_attention_forward_bf16(q, k, v, o, lse, q_pos, k_pos, dims);
  }
}

void CudaBackend::chunked_attention_forward_bf16(const uint16_t* q, const uint16_t* k,
                                                 const uint16_t* v, uint16_t* o, float* lse,
                                                 const int32_t* q_pos, const int32_t* k_pos,
                                                 const AttentionDims& dims) {
  const int64_t rows =
      attention_chunk_rows(dims, sizeof(float) + sizeof(uint16_t), kChunkBytes, kMaxChunkRows);
  const std::vector<AttentionStep> plan = plan_attention_forward(dims, q_pos, k_pos, rows);
  if (plan.empty()) return;
  auto q_pos_dev = upload(q_pos, dims.Sq);
  auto k_pos_dev = upload(k_pos, dims.Skv);
  Scratch scores(*this, sizeof(float) * rows * dims.Skv);
  Scratch probs(*this, sizeof(uint16_t) * rows * dims.Skv);
  AttentionBuffers buffers;
  buffers.set(AttentionBuffer::kQ, q);
  buffers.set(AttentionBuffer::kK, k);
  buffers.set(AttentionBuffer::kV, v);
  buffers.set(AttentionBuffer::kO, o);
  buffers.set(AttentionBuffer::kScores, scores.as<float>());
  buffers.set(AttentionBuffer::kProbs, probs.as<uint16_t>());
  run_attention_plan(plan, buffers, q_pos_dev->as<int32_t>(), k_pos_dev->as<int32_t>(), nullptr,
                     lse, nullptr);
}

void CudaBackend::attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                          const uint16_t* k, const uint16_t* v,
                                          const uint16_t* o, const float* lse, uint16_t* dq,
                                          GemmOutput dk, GemmOutput dv, const int32_t* q_pos,
                                          const int32_t* k_pos, int64_t B, int64_t Sq,
                                          int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  const AttentionDims dims{B, Sq, Skv, nh, nkv, d};
  const int64_t q_size = B * Sq * nh * d, kv_size = B * Skv * nkv * d;
  if (q_size == 0 || kv_size == 0) return;
  // dQ accumulates in a float32 copy, rounded to bf16 once at the end (dK and dV too on the
  // chunked path; the flash kernel sums them in registers and adds each once).
  Scratch dq32(*this, sizeof(float) * q_size), delta(*this, sizeof(float) * B * nh * Sq);
  widen_bf16(dq, dq32.as<float>(), q_size);
  constexpr int warps = kThreads / kWarp;
  delta_kernel<<<blocks_of(B * Sq * nh, warps), kThreads, 0, stream_>>>(dout, o,
                                                                        delta.as<float>(), B,
                                                                        Sq, nh, d);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  const auto run = [&](AttentionPath path, float* dq_into, GemmOutput dk_into,
                       GemmOutput dv_into) {
    if (path == AttentionPath::kFlash) {
      flash_attention_backward_bf16(dout, q, k, v, lse, delta.as<float>(), dq_into, dk_into,
                                    dv_into, q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
    } else {
      chunked_attention_backward_bf16(dout, q, k, v, lse, delta.as<float>(), dq_into, dk_into,
                                      dv_into, q_pos, k_pos, dims);
    }
  };
  const bool flash =
      flash_attention_fits(d, nh, nkv, B, {dout, q, k, v}) &&
      prefer_flash(attention_shape_class(true, dims, dk.dtype == DType::kFloat32),
                   [&](AttentionPath path) {
                     const size_t dk_bytes = dtype_size(dk.dtype) * kv_size;
                     const size_t dv_bytes = dtype_size(dv.dtype) * kv_size;
                     Scratch dq_trial(*this, sizeof(float) * q_size);
                     Scratch dk_trial(*this, dk_bytes), dv_trial(*this, dv_bytes);
                     MOEFOLD_CUDA_CHECK(
                         cudaMemsetAsync(dk_trial.as<void>(), 0, dk_bytes, stream_));
                     MOEFOLD_CUDA_CHECK(
                         cudaMemsetAsync(dv_trial.as<void>(), 0, dv_bytes, stream_));
                     MOEFOLD_CUDA_CHECK(
                         cudaMemsetAsync(dq_trial.as<void>(), 0, sizeof(float) * q_size, stream_));
                     run(path, dq_trial.as<float>(), {dk_trial.as<void>(), dk.dtype},
                         {dv_trial.as<void>(), dv.dtype});
                   });
  run(flash ? AttentionPath::kFlash : AttentionPath::kChunked, dq32.as<float>(), dk, dv);
  round_to_bf16(dq32.as<float>(), dq, q_size);
}

void CudaBackend::chunked_attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                                  const uint16_t* k, const uint16_t* v,
                                                  const float* lse, const float* delta,
                                                  float* dq32, GemmOutput dk, GemmOutput dv,
                                                  const int32_t* q_pos, const int32_t* k_pos,
                                                  const AttentionDims& dims) {
  const int64_t rows = attention_chunk_rows(dims, 2 * sizeof(float) + sizeof(uint16_t),
                                            kChunkBytes, kMaxChunkRows);
  const std::vector<AttentionStep> plan = plan_attention_backward(dims, q_pos, k_pos, rows);
  if (plan.empty()) return;
  const int64_t kv_size = dims.B * dims.Skv * dims.nkv * dims.d;
  auto q_pos_dev = upload(q_pos, dims.Sq);
  auto k_pos_dev = upload(k_pos, dims.Skv);
  // Float32 dK, dV accumulate in place; bf16 ones in float32 copies.
  const bool narrow = dk.dtype == DType::kBFloat16;
  std::unique_ptr<Scratch> dk_copy, dv_copy;
  float* dk32 = static_cast<float*>(dk.data);
  float* dv32 = static_cast<float*>(dv.data);
  if (narrow) {
    dk_copy = std::make_unique<Scratch>(*this, sizeof(float) * kv_size);
    dv_copy = std::make_unique<Scratch>(*this, sizeof(float) * kv_size);
    dk32 = dk_copy->as<float>();
    dv32 = dv_copy->as<float>();
    widen_bf16(static_cast<const uint16_t*>(dk.data), dk32, kv_size);
    widen_bf16(static_cast<const uint16_t*>(dv.data), dv32, kv_size);
  }
  const int64_t chunk = rows * dims.Skv;
  Scratch scores(*this, sizeof(float) * chunk), dp(*this, sizeof(float) * chunk);
  Scratch probs(*this, sizeof(uint16_t) * chunk);  // P, then dS
  AttentionBuffers buffers;
  buffers.set(AttentionBuffer::kQ, q);
  buffers.set(AttentionBuffer::kK, k);
  buffers.set(AttentionBuffer::kV, v);
  buffers.set(AttentionBuffer::kDout, dout);
  buffers.set(AttentionBuffer::kDq, dq32);
  buffers.set(AttentionBuffer::kDk, dk32);
  buffers.set(AttentionBuffer::kDv, dv32);
  buffers.set(AttentionBuffer::kScores, scores.as<float>());
  buffers.set(AttentionBuffer::kProbs, probs.as<uint16_t>());
  buffers.set(AttentionBuffer::kDp, dp.as<float>());
  run_attention_plan(plan, buffers, q_pos_dev->as<int32_t>(), k_pos_dev->as<int32_t>(), lse,
                     nullptr, delta);
  if (narrow) {
    round_to_bf16(dk32, static_cast<uint16_t*>(dk.data), kv_size);
    round_to_bf16(dv32, static_cast<uint16_t*>(dv.data), kv_size);
  }
}

}  // namespace moefold::cuda
