// Cross-entropy on the CUDA backend: the fused LM head + CE over chunks of rows (a cuBLAS GEMM
// to logits, one kernel turning them into the loss and its gradient, two GEMMs for dh and dw),
// and the vocabulary-parallel pieces over a shard of the logits. Labels and masks are host
// arrays: they are checked on the host and uploaded; losses are summed on the device, where the
// host reads them once per step. With bf16 h and w (MODEL.md "Mixed precision") the logits,
// loss and dw stay float32, and the logits' gradient is rounded to bf16 for the two backward
// GEMMs, which then run on tensor cores like every other GEMM.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/kernel_math.h"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

// One block per row of V logits: ce_N[row] = log Σ exp(z) − z[label]; with `backward`, the
// logits become (softmax − onehot)·mask·grad_scale (zeros for masked rows).
__global__ void cross_entropy_rows_kernel(float* logits_NV, const int32_t* labels_N,
                                          const float* mask_N, float grad_scale, bool backward,
                                          float* ce_N, int64_t V) {
  __shared__ float shared[kWarp];
  const int64_t row = blockIdx.x;
  float* z = logits_NV + row * V;
  const float mask = mask_N == nullptr ? 1.0f : mask_N[row];
  if (mask == 0.0f) {
    if (backward) {
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) z[v] = 0.0f;
    }
    if (threadIdx.x == 0) ce_N[row] = 0.0f;
    return;
  }
  const int32_t label = labels_N[row];
  const float label_logit = z[label];
  float max = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) max = fmaxf(max, z[v]);
  max = block_max(max, shared);
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += exp_approx(z[v] - max);
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) ce_N[row] = max + logf(sum) - label_logit;
  if (!backward) return;
  const float weight = mask * grad_scale;
  const float scale = weight / sum;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    z[v] = cross_entropy_gradient(exp_approx(z[v] - max), scale, v == label, weight);
  }
}

__global__ void rows_max_kernel(const float* z_NV, float* max_N, int64_t V) {
  __shared__ float shared[kWarp];
  const float* z = z_NV + blockIdx.x * V;
  float max = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) max = fmaxf(max, z[v]);
  max = block_max(max, shared);
  if (threadIdx.x == 0) max_N[blockIdx.x] = max;
}

// z ← exp(z − max) per row, sums_N = Σ; label_N = the label's logit (read before the exp) for
// rows whose label column `label_col_N` (−1: none) is in this shard.
__global__ void exp_shifted_rows_kernel(float* z_NV, const float* max_N,
                                        const int32_t* label_col_N, double* sums_N,
                                        double* label_N, int64_t V) {
  __shared__ float shared[kWarp];
  const int64_t row = blockIdx.x;
  float* z = z_NV + row * V;
  const int32_t col = label_col_N[row];
  if (threadIdx.x == 0 && col >= 0) label_N[row] = z[col];
  __syncthreads();  // the label's logit is read before it is overwritten
  const float max = max_N[row];
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float e = exp_approx(z[v] - max);
    z[v] = e;
    sum += e;
  }
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) sums_N[row] = sum;
}

__global__ void softmax_gradient_rows_kernel(float* z_NV, const double* totals_N,
                                             const float* mask_N, float grad_scale,
                                             const int32_t* label_col_N, int64_t V) {
  const int64_t row = blockIdx.x;
  float* z = z_NV + row * V;
  const float mask = mask_N == nullptr ? 1.0f : mask_N[row];
  const float weight = mask * grad_scale;
  const float scale = softmax_gradient_scale(weight, mask, totals_N[row]);
  const int32_t col = label_col_N[row];
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    z[v] = cross_entropy_gradient(z[v], scale, v == col, weight);
  }
}

// One block adds Σ over N rows of a row's loss to *total in float64: the loss of a micro-batch
// is summed where it was computed, so the host need not wait for it.
constexpr int kSumThreads = 256;

template <class RowLoss>
__global__ void add_loss_sum_kernel(RowLoss row_loss, int64_t N, double* total) {
  __shared__ double partial[kSumThreads];
  double sum = 0.0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) sum += row_loss(r);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned stride = kSumThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *total += partial[0];
}

// CE·mask of the fused head's rows (ce_N is 0 on masked rows).
struct MaskedLoss {
  const float* ce_N;
  const float* mask_N;  // null: all ones
  __device__ double operator()(int64_t r) const {
    return static_cast<double>(ce_N[r]) * (mask_N == nullptr ? 1.0f : mask_N[r]);
  }
};

// CE·mask of a row from the reductions over the vocabulary shards.
struct VocabParallelLoss {
  const double* sums_N;
  const double* label_N;
  const float* max_N;
  const float* mask_N;  // null: all ones
  __device__ double operator()(int64_t r) const {
    const float mask = mask_N == nullptr ? 1.0f : mask_N[r];
    if (mask == 0.0f) return 0.0;
    return vocab_parallel_cross_entropy(sums_N[r], max_N[r], label_N[r], mask);
  }
};

// The label's column in the shard [first, first + Vl), or −1 (another shard, or masked out).
std::vector<int32_t> label_columns(const int32_t* labels, const float* mask, int64_t N, int64_t Vl,
                                   int64_t first) {
  std::vector<int32_t> columns(N, -1);
  for (int64_t r = 0; r < N; ++r) {
    if (mask != nullptr && mask[r] == 0.0f) continue;
    const int64_t label = labels[r];
    if (label >= first && label < first + Vl) columns[r] = static_cast<int32_t>(label - first);
  }
  return columns;
}

}  // namespace

void CudaBackend::cross_entropy_forward_backward(const float* h, const float* w,
                                                 const int32_t* labels, const float* mask,
                                                 float grad_scale, float* dh, float* dw,
                                                 double* loss_sum, int64_t N, int64_t H, int64_t V,
                                                 int64_t chunk_rows) {
  cross_entropy_chunks(f32_in(h), f32_in(w), labels, mask, grad_scale, f32_out(dh), dw, loss_sum,
                       N, H, V, chunk_rows);
}

void CudaBackend::cross_entropy_forward_backward_bf16(const uint16_t* h, const uint16_t* w,
                                                      const int32_t* labels, const float* mask,
                                                      float grad_scale, uint16_t* dh, float* dw,
                                                      double* loss_sum, int64_t N, int64_t H,
                                                      int64_t V, int64_t chunk_rows) {
  cross_entropy_chunks(bf16_in(h), bf16_in(w), labels, mask, grad_scale, bf16_out(dh), dw,
                       loss_sum, N, H, V, chunk_rows);
}

void CudaBackend::cross_entropy_chunks(GemmInput h, GemmInput w, const int32_t* labels,
                                       const float* mask, float grad_scale, GemmOutput dh,
                                       float* dw, double* loss_sum, int64_t N, int64_t H,
                                       int64_t V, int64_t chunk_rows) {
  MOEFOLD_CHECK(chunk_rows > 0, "chunk_rows must be positive");
  for (int64_t n = 0; n < N; ++n) {
    if (mask != nullptr && mask[n] == 0.0f) continue;
    MOEFOLD_CHECK(labels[n] >= 0 && labels[n] < V,
                  "label " << labels[n] << " at row " << n << " outside vocabulary of " << V);
  }
  if (N == 0) return;
  const bool backward = grad_scale != 0.0f && (dh.data != nullptr || dw != nullptr);
  const int64_t chunk = std::min(chunk_rows, N);
  Scratch logits(*this, sizeof(float) * chunk * V), ce(*this, sizeof(float) * N);
  const bool narrow = w.dtype == DType::kBFloat16;
  std::unique_ptr<Scratch> gradient16 =
      backward && narrow ? std::make_unique<Scratch>(*this, sizeof(uint16_t) * chunk * V)
                         : nullptr;
  auto labels_dev = upload(labels, N);
  std::unique_ptr<Scratch> mask_dev = mask != nullptr ? upload(mask, N) : nullptr;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    linear_forward_mixed(advance(h, r0 * H), w, f32_out(logits.as<float>()), rows, H, V, false);
    cross_entropy_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream_>>>(
        logits.as<float>(), labels_dev->as<int32_t>() + r0,
        mask_dev ? mask_dev->as<float>() + r0 : nullptr, grad_scale, backward,
        ce.as<float>() + r0, V);
    MOEFOLD_CUDA_CHECK_LAUNCH();
    if (!backward) continue;
    GemmInput gradient = f32_in(logits.as<float>());
    if (narrow) {
      round_to_bf16(logits.as<float>(), gradient16->as<uint16_t>(), rows * V);
      gradient = bf16_in(gradient16->as<uint16_t>());
    }
    if (dh.data != nullptr) {
      linear_backward_dx_mixed(gradient, w, advance(dh, r0 * H), rows, H, V, false);
    }
    if (dw != nullptr) {
      linear_backward_dw_mixed(gradient, advance(h, r0 * H), f32_out(dw), rows, H, V);
    }
  }
  add_loss_sum_kernel<MaskedLoss><<<1, kSumThreads, 0, stream_>>>(
      MaskedLoss{ce.as<float>(), mask_dev ? mask_dev->as<float>() : nullptr}, N, loss_sum);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::rows_max(const float* z, float* row_max, int64_t N, int64_t Vl) {
  if (N == 0) return;
  rows_max_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(z, row_max, Vl);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::exp_shifted_rows(float* z, const float* row_max, const int32_t* labels,
                                   const float* mask, double* sums, double* label_logit,
                                   int64_t N, int64_t Vl, int64_t first) {
  if (N == 0) return;
  const std::vector<int32_t> columns = label_columns(labels, mask, N, Vl, first);
  auto columns_dev = upload(columns.data(), N);
  exp_shifted_rows_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(
      z, row_max, columns_dev->as<int32_t>(), sums, label_logit, Vl);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::vocab_parallel_loss(const double* sums, const double* label_logit,
                                      const float* row_max, const float* mask, int64_t N,
                                      double* loss_sum) {
  if (N == 0) return;
  std::unique_ptr<Scratch> mask_dev = mask != nullptr ? upload(mask, N) : nullptr;
  add_loss_sum_kernel<VocabParallelLoss><<<1, kSumThreads, 0, stream_>>>(
      VocabParallelLoss{sums, label_logit, row_max, mask_dev ? mask_dev->as<float>() : nullptr},
      N, loss_sum);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::softmax_gradient_rows(float* z, const double* totals, const int32_t* labels,
                                        const float* mask, float grad_scale, int64_t N,
                                        int64_t Vl, int64_t first) {
  if (N == 0) return;
  const std::vector<int32_t> columns = label_columns(labels, mask, N, Vl, first);
  auto columns_dev = upload(columns.data(), N);
  std::unique_ptr<Scratch> mask_dev = mask != nullptr ? upload(mask, N) : nullptr;
  softmax_gradient_rows_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(
      z, totals, mask_dev ? mask_dev->as<float>() : nullptr, grad_scale,
      columns_dev->as<int32_t>(), Vl);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::cuda
