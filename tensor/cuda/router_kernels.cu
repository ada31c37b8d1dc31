// Routing on the GPU: the router's scores, top-k, gates, log-sum-exp, balance statistics and
// backward, one thread per token row running tensor/router_math.h's row functions (the CPU
// backend runs the same functions, so the CPU tests check this math). The balance statistics
// take one thread per (group, expert) column summing its rows in order: deterministic, no
// atomics. Host metadata (row groups, counts, the capacity mask) is uploaded here.
#include <algorithm>
#include <cstdint>

#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/router_math.h"

namespace moefold::cuda {
namespace {

__global__ void route_forward_kernel(const float* z_nE, const float* bias_E, float* probs_nE,
                                     int32_t* idx_nk, float* gates_nk, float* lse_n, int64_t n,
                                     RouterRowConfig config) {
  const int64_t E = config.experts, k = config.topk;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n;
       t += int64_t{gridDim.x} * blockDim.x) {
    router_row_forward(config, z_nE + t * E, bias_E, probs_nE + t * E, idx_nk + t * k,
                       gates_nk + t * k, lse_n != nullptr ? lse_n + t : nullptr);
  }
}

// row_sum (n): each row's Σ s, the sigmoid balance probabilities' normaliser.
__global__ void route_score_sums_kernel(const float* probs_nE, float* row_sum_n, int64_t n,
                                        int32_t E) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n;
       t += int64_t{gridDim.x} * blockDim.x) {
    row_sum_n[t] = router_score_sum(probs_nE + t * E, E);
  }
}

// Column c < groups·E: Σ over its group's rows of P[t, c % E]; column groups·E: Σ lse². Pass 1:
// thread (chunk, c) sums the chunk's rows in order into partial[chunk][c]; pass 2 adds the
// chunks in order. Deterministic (no atomics), and parallel over chunks as well as columns.
constexpr int64_t kSumChunkRows = 128;

__global__ void route_load_partials_kernel(const float* probs_nE, const float* row_sum_n,
                                           const float* lse_n, const int32_t* row_group_n,
                                           double* partial, int64_t n, int64_t chunks,
                                           int64_t groups, bool softmax, int32_t E) {
  const int64_t columns = groups * E + 1;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < chunks * columns;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t chunk = i / columns, c = i % columns;
    const int64_t begin = chunk * kSumChunkRows, end = min(n, begin + kSumChunkRows);
    double sum = 0.0;
    if (c == columns - 1) {
      for (int64_t t = begin; t < end && lse_n != nullptr; ++t) {
        sum += static_cast<double>(lse_n[t]) * lse_n[t];
      }
    } else {
      const int64_t group = c / E, e = c % E;
      for (int64_t t = begin; t < end; ++t) {
        if ((row_group_n != nullptr ? row_group_n[t] : 0) != group) continue;
        sum += router_balance_prob(softmax, probs_nE[t * E + e],
                                   softmax ? 0.0f : row_sum_n[t]);
      }
    }
    partial[i] = sum;
  }
}

__global__ void route_load_sums_kernel(const double* partial, double* sums, int64_t chunks,
                                       int64_t columns) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < columns;
       c += int64_t{gridDim.x} * blockDim.x) {
    double sum = 0.0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[chunk * columns + c];
    sums[c] = sum;
  }
}

__global__ void route_backward_kernel(const float* dgates_nk, const uint8_t* keep_nk,
                                      const float* gates_nk, const float* probs_nE,
                                      const float* z_nE, const int32_t* idx_nk,
                                      const float* lse_n, const int64_t* counts_GE,
                                      const int32_t* row_group_n, float* dz_nE, int64_t n,
                                      RouterBackwardConfig config) {
  const int64_t E = config.row.experts, k = config.row.topk;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t group = row_group_n != nullptr ? row_group_n[t] : 0;
    router_row_backward(config, dgates_nk + t * k,
                        keep_nk != nullptr ? keep_nk + t * k : nullptr, gates_nk + t * k,
                        probs_nE + t * E, z_nE + t * E, idx_nk + t * k,
                        config.z_loss ? lse_n[t] : 0.0f,
                        config.balance ? counts_GE + group * E : nullptr, dz_nE + t * E);
  }
}

constexpr int kRowThreads = 128;  // one row per thread: small blocks spread rows over the SMs

}  // namespace

void CudaBackend::route_forward(const float* z, const float* bias, float* probs, int32_t* idx,
                                float* gates, float* lse, int64_t n,
                                const RouterRowConfig& config) {
  if (n == 0) return;
  route_forward_kernel<<<blocks_for(n, kRowThreads), kRowThreads, 0, stream_>>>(
      z, bias, probs, idx, gates, lse, n, config);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::route_load_sums(const float* probs, const float* lse, const int32_t* row_group,
                                  double* sums, int64_t n, int64_t groups,
                                  const RouterRowConfig& config) {
  const int32_t E = config.experts;
  auto row_group_dev = row_group != nullptr ? upload(row_group, n) : nullptr;
  Scratch row_sum(*this, sizeof(float) * static_cast<size_t>(config.softmax ? 1 : n + 1));
  if (!config.softmax && n > 0 && groups > 0) {
    route_score_sums_kernel<<<blocks_for(n, kRowThreads), kRowThreads, 0, stream_>>>(
        probs, row_sum.as<float>(), n, E);
    MOEFOLD_CUDA_CHECK_LAUNCH();
  }
  const int64_t columns = groups * E + 1;
  const int64_t chunks = std::max<int64_t>(1, (n + kSumChunkRows - 1) / kSumChunkRows);
  Scratch partial(*this, sizeof(double) * static_cast<size_t>(chunks * columns));
  route_load_partials_kernel<<<blocks_for(chunks * columns, kRowThreads), kRowThreads, 0,
                               stream_>>>(
      probs, row_sum.as<float>(), lse, row_group_dev ? row_group_dev->as<int32_t>() : nullptr,
      partial.as<double>(), n, chunks, groups, config.softmax, E);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  route_load_sums_kernel<<<blocks_for(columns, kRowThreads), kRowThreads, 0, stream_>>>(
      partial.as<double>(), sums, chunks, columns);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::route_backward(const float* dgates, const uint8_t* keep, const float* gates,
                                 const float* probs, const float* z, const int32_t* idx,
                                 const float* lse, const int64_t* counts,
                                 const int32_t* row_group, float* dz, int64_t n, int64_t groups,
                                 const RouterBackwardConfig& config) {
  if (n == 0) return;
  const int64_t k = config.row.topk, E = config.row.experts;
  auto keep_dev = keep != nullptr ? upload(keep, n * k) : nullptr;
  auto counts_dev = counts != nullptr ? upload(counts, groups * E) : nullptr;
  auto row_group_dev = row_group != nullptr ? upload(row_group, n) : nullptr;
  route_backward_kernel<<<blocks_for(n, kRowThreads), kRowThreads, 0, stream_>>>(
      dgates, keep_dev ? keep_dev->as<uint8_t>() : nullptr, gates, probs, z, idx, lse,
      counts_dev ? counts_dev->as<int64_t>() : nullptr,
      row_group_dev ? row_group_dev->as<int32_t>() : nullptr, dz, n, config);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::cuda
