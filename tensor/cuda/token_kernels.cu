// Token gathers and scatters of the CUDA backend: the MoE permutation by expert and its combine,
// and the (vocabulary-sharded) embedding. Scatters that several sources add into (a token's K
// choices, repeated token ids) are turned into gathers by inverting the host-side index arrays,
// so every sum has a fixed order: results are deterministic, with no float atomics. The rows are
// float32 or bf16 (T, launch_utils.cuh's load/store); gate weights and gradients stay float32.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"

namespace moefold::cuda {
namespace {

// For each assignment a = t·K + j: the permuted row holding it, or −1 (dropped). Size N·K with
// N = the number of tokens the permutation reaches.
std::vector<int32_t> invert_permutation(const int32_t* perm_R, int64_t R, int64_t K, int64_t* N) {
  int64_t assignments = 0;
  for (int64_t r = 0; r < R; ++r) {
    MOEFOLD_CHECK(perm_R[r] >= 0, "negative assignment " << perm_R[r] << " at row " << r);
    assignments = std::max<int64_t>(assignments, int64_t{perm_R[r]} + 1);
  }
  *N = (assignments + K - 1) / K;
  std::vector<int32_t> inverse(*N * K, -1);
  for (int64_t r = 0; r < R; ++r) inverse[perm_R[r]] = static_cast<int32_t>(r);
  return inverse;
}

template <typename T>
__global__ void permute_kernel(const T* x_NH, const int32_t* perm_R, T* out_RH, int64_t R,
                               int64_t K, int64_t H) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < R * H;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / H, h = i % H;
    out_RH[i] = x_NH[(perm_R[r] / K) * H + h];  // a copy: exact in either storage
  }
}

// dx[t] += Σ_j dout[row of (t, j)], or with weights: out[t] += Σ_j w[t,j]·y[row of (t, j)].
template <typename T>
__global__ void gather_choices_kernel(const T* rows_RH, const int32_t* inverse_NK,
                                      const float* weights_NK, T* out_NH, int64_t N, int64_t K,
                                      int64_t H) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < N * H;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / H, h = i % H;
    float acc = 0.0f;
    for (int64_t j = 0; j < K; ++j) {
      const int32_t r = inverse_NK[t * K + j];
      if (r < 0) continue;
      const float value = load(rows_RH, r * H + h);
      acc += weights_NK == nullptr ? value : weights_NK[t * K + j] * value;
    }
    store(out_NH, i, load(out_NH, i) + acc);
  }
}

// One warp per permuted row r (assignment a): dy[r] = w[a]·dout[t]; dweights[a] += dout[t]·y[r].
template <typename T>
__global__ void combine_backward_kernel(const T* dout_NH, const T* y_RH, const int32_t* perm_R,
                                        const float* weights_NK, T* dy_RH, float* dweights_NK,
                                        int64_t R, int64_t K, int64_t H) {
  const int64_t r = blockIdx.x * int64_t{kThreads / kWarp} + threadIdx.x / kWarp;
  if (r >= R) return;
  const int lane = threadIdx.x % kWarp;
  const int32_t a = perm_R[r];
  const float w = weights_NK[a];
  const T* dout = dout_NH + (a / K) * H;
  const T* y = y_RH + r * H;
  float dot = 0.0f;
  for (int64_t h = lane; h < H; h += kWarp) {
    store(dy_RH, r * H + h, w * load(dout, h));
    dot += load(dout, h) * load(y, h);
  }
  dot = warp_sum(dot);
  if (lane == 0) dweights_NK[a] += dot;
}

template <typename T>
__global__ void embedding_forward_kernel(const int32_t* tokens_N, const T* table_rH, T* out_NH,
                                         int64_t N, int64_t first_row, int64_t rows, int64_t H) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < N * H;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = i / H, h = i % H;
    const int64_t row = int64_t{tokens_N[n]} - first_row;
    store(out_NH, i, row >= 0 && row < rows ? load(table_rH, row * H + h) : 0.0f);
  }
}

// One block per distinct table row: adds the gradients of its tokens, in token order.
template <typename T>
__global__ void embedding_backward_kernel(const T* dout_NH, const int32_t* order_M,
                                          const int64_t* starts_U, const int32_t* rows_U,
                                          float* dtable_rH, int64_t H) {
  const int64_t u = blockIdx.x;
  float* out = dtable_rH + int64_t{rows_U[u]} * H;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = starts_U[u]; k < starts_U[u + 1]; ++k) {
      acc += load(dout_NH, order_M[k] * H + h);
    }
    out[h] += acc;
  }
}

void check_tokens(const int32_t* tokens_N, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    MOEFOLD_CHECK(tokens_N[n] >= 0 && tokens_N[n] < V,
                  "token id " << tokens_N[n] << " at " << n << " outside vocabulary of " << V);
  }
}

// ---- launches shared by the float32 and bf16 entry points ------------------------------------
template <typename T>
void launch_permute(CudaBackend& backend, const T* x, const int32_t* perm, T* out, int64_t R,
                    int64_t K, int64_t H) {
  if (R == 0 || H == 0) return;
  auto perm_dev = backend.upload(perm, R);
  permute_kernel<T><<<blocks_for(R * H), kThreads, 0, backend.stream()>>>(
      x, perm_dev->template as<int32_t>(), out, R, K, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

// out[t] += Σ_j (weights[t,j]·) rows[row of (t, j)]: permute backward, and combine.
template <typename T>
void launch_gather_choices(CudaBackend& backend, const T* rows, const int32_t* perm,
                           const float* weights, T* out, int64_t R, int64_t K, int64_t H) {
  if (R == 0 || H == 0) return;
  int64_t N = 0;
  const std::vector<int32_t> inverse = invert_permutation(perm, R, K, &N);
  auto inverse_dev = backend.upload(inverse.data(), N * K);
  gather_choices_kernel<T><<<blocks_for(N * H), kThreads, 0, backend.stream()>>>(
      rows, inverse_dev->template as<int32_t>(), weights, out, N, K, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_combine_backward(CudaBackend& backend, const T* dout, const T* y,
                             const int32_t* perm, const float* weights, T* dy, float* dweights,
                             int64_t R, int64_t K, int64_t H) {
  if (R == 0) return;
  auto perm_dev = backend.upload(perm, R);
  const unsigned blocks = static_cast<unsigned>((R + kThreads / kWarp - 1) / (kThreads / kWarp));
  combine_backward_kernel<T><<<blocks, kThreads, 0, backend.stream()>>>(
      dout, y, perm_dev->template as<int32_t>(), weights, dy, dweights, R, K, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_embedding_forward(CudaBackend& backend, const int32_t* tokens, const T* table, T* out,
                              int64_t N, int64_t V, int64_t first_row, int64_t rows, int64_t H) {
  check_tokens(tokens, N, V);
  if (N == 0 || H == 0) return;
  auto tokens_dev = backend.upload(tokens, N);
  embedding_forward_kernel<T><<<blocks_for(N * H), kThreads, 0, backend.stream()>>>(
      tokens_dev->template as<int32_t>(), table, out, N, first_row, rows, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_embedding_backward(CudaBackend& backend, const T* dout, const int32_t* tokens,
                               float* dtable, int64_t N, int64_t V, int64_t first_row,
                               int64_t rows, int64_t H) {
  check_tokens(tokens, N, V);
  // The tokens of this shard, grouped by table row (a stable sort keeps token order).
  std::vector<int32_t> order;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = int64_t{tokens[n]} - first_row;
    if (row >= 0 && row < rows) order.push_back(static_cast<int32_t>(n));
  }
  if (order.empty() || H == 0) return;
  std::stable_sort(order.begin(), order.end(),
                   [tokens](int32_t a, int32_t b) { return tokens[a] < tokens[b]; });
  std::vector<int32_t> distinct_rows;
  std::vector<int64_t> starts;
  for (size_t k = 0; k < order.size(); ++k) {
    if (k == 0 || tokens[order[k]] != tokens[order[k - 1]]) {
      distinct_rows.push_back(static_cast<int32_t>(tokens[order[k]] - first_row));
      starts.push_back(static_cast<int64_t>(k));
    }
  }
  starts.push_back(static_cast<int64_t>(order.size()));
  const int64_t U = static_cast<int64_t>(distinct_rows.size());
  auto order_dev = backend.upload(order.data(), static_cast<int64_t>(order.size()));
  auto starts_dev = backend.upload(starts.data(), U + 1);
  auto rows_dev = backend.upload(distinct_rows.data(), U);
  embedding_backward_kernel<T><<<static_cast<unsigned>(U), kThreads, 0, backend.stream()>>>(
      dout, order_dev->template as<int32_t>(), starts_dev->template as<int64_t>(),
      rows_dev->template as<int32_t>(), dtable, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::permute_tokens(const float* x, const int32_t* perm, float* out, int64_t R,
                                 int64_t K, int64_t H) {
  launch_permute(*this, x, perm, out, R, K, H);
}

void CudaBackend::permute_tokens_bf16(const uint16_t* x, const int32_t* perm, uint16_t* out,
                                      int64_t, int64_t R, int64_t K, int64_t H) {
  launch_permute(*this, x, perm, out, R, K, H);
}

void CudaBackend::permute_tokens_backward(const float* dout, const int32_t* perm, float* dx,
                                          int64_t R, int64_t K, int64_t H) {
  launch_gather_choices<float>(*this, dout, perm, nullptr, dx, R, K, H);
}

void CudaBackend::permute_tokens_backward_bf16(const uint16_t* dout, const int32_t* perm,
                                               uint16_t* dx, int64_t, int64_t R, int64_t K,
                                               int64_t H) {
  launch_gather_choices<uint16_t>(*this, dout, perm, nullptr, dx, R, K, H);
}

void CudaBackend::combine_tokens(const float* y, const int32_t* perm, const float* weights,
                                 float* out, int64_t R, int64_t K, int64_t H) {
  launch_gather_choices(*this, y, perm, weights, out, R, K, H);
}

void CudaBackend::combine_tokens_bf16(const uint16_t* y, const int32_t* perm,
                                      const float* weights, uint16_t* out, int64_t, int64_t R,
                                      int64_t K, int64_t H) {
  launch_gather_choices(*this, y, perm, weights, out, R, K, H);
}

void CudaBackend::combine_tokens_backward(const float* dout, const float* y, const int32_t* perm,
                                          const float* weights, float* dy, float* dweights,
                                          int64_t R, int64_t K, int64_t H) {
  launch_combine_backward(*this, dout, y, perm, weights, dy, dweights, R, K, H);
}

void CudaBackend::combine_tokens_backward_bf16(const uint16_t* dout, const uint16_t* y,
                                               const int32_t* perm, const float* weights,
                                               uint16_t* dy, float* dweights, int64_t, int64_t R,
                                               int64_t K, int64_t H) {
  launch_combine_backward(*this, dout, y, perm, weights, dy, dweights, R, K, H);
}

void CudaBackend::embedding_forward(const int32_t* tokens, const float* table, float* out,
                                    int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                    int64_t H) {
  launch_embedding_forward(*this, tokens, table, out, N, V, first_row, rows, H);
}

void CudaBackend::embedding_forward_bf16(const int32_t* tokens, const uint16_t* table,
                                         uint16_t* out, int64_t N, int64_t V, int64_t first_row,
                                         int64_t rows, int64_t H) {
  launch_embedding_forward(*this, tokens, table, out, N, V, first_row, rows, H);
}

void CudaBackend::embedding_backward(const float* dout, const int32_t* tokens, float* dtable,
                                     int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                     int64_t H) {
  launch_embedding_backward(*this, dout, tokens, dtable, N, V, first_row, rows, H);
}

void CudaBackend::embedding_backward_bf16(const uint16_t* dout, const int32_t* tokens,
                                          float* dtable, int64_t N, int64_t V, int64_t first_row,
                                          int64_t rows, int64_t H) {
  launch_embedding_backward(*this, dout, tokens, dtable, N, V, first_row, rows, H);
}

}  // namespace moefold::cuda
