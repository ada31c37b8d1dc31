// Row-wise and element-wise layer kernels of the CUDA backend: RMSNorm, RoPE, SwiGLU and the
// router's softmax/sigmoid/logsumexp. The formulas are kernel_math.h's and row_math.h's, which
// the CPU kernels share; these kernels only add the reductions and the launch shapes. The layer
// kernels are templated on their activations' storage (T: float, or bf16 bits as uint16_t,
// launch_utils.cuh's load/store); statistics and weight gradients stay float32.
#include <algorithm>
#include <cstdint>

#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/kernel_math.h"
#include "tensor/row_math.h"

namespace moefold::cuda {
namespace {

// ---- RMSNorm (one block per row) ------------------------------------------------------------
template <typename T>
__global__ void rmsnorm_forward_kernel(const T* x_NH, const T* w_H, T* y_NH, float* rstd_N,
                                       int64_t H, float eps) {
  __shared__ float shared[kWarp];
  const T* x = x_NH + blockIdx.x * H;
  T* y = y_NH + blockIdx.x * H;
  float sum_sq = 0.0f;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) sum_sq += load(x, h) * load(x, h);
  const float rstd = rmsnorm_rstd(block_sum(sum_sq, shared), H, eps);
  if (threadIdx.x == 0) rstd_N[blockIdx.x] = rstd;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    store(y, h, load(x, h) * rstd * load(w_H, h));
  }
}

template <typename T>
__global__ void rmsnorm_backward_dx_kernel(const T* dy_NH, const T* x_NH, const T* w_H,
                                           const float* rstd_N, T* dx_NH, int64_t H,
                                           bool accumulate) {
  __shared__ float shared[kWarp];
  const int64_t row = blockIdx.x;
  const T* dy = dy_NH + row * H;
  const T* x = x_NH + row * H;
  T* dx = dx_NH + row * H;
  const float rstd = rstd_N[row];
  float dot = 0.0f;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    dot += load(dy, h) * load(w_H, h) * load(x, h);
  }
  const float coeff = rmsnorm_backward_coeff(block_sum(dot, shared), rstd, H);
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    const float value = rmsnorm_dx(load(dy, h), load(w_H, h), load(x, h), rstd, coeff);
    store(dx, h, accumulate ? load(dx, h) + value : value);  // reads dx only to accumulate
  }
}

// dw partial sums: block (32 columns × 8 row lanes), blockIdx.y a slice of rows; partial_PH
// gets one row per slice. A second kernel adds the slices in order (deterministic, no atomics).
constexpr int kRowLanes = 8;
template <typename T>
__global__ void rmsnorm_dw_partial_kernel(const T* dy_NH, const T* x_NH, const float* rstd_N,
                                          float* partial_PH, int64_t N, int64_t H) {
  __shared__ float sums[kRowLanes][kWarp];
  const int64_t h = blockIdx.x * int64_t{kWarp} + threadIdx.x;
  float acc = 0.0f;
  if (h < H) {
    for (int64_t n = blockIdx.y * int64_t{kRowLanes} + threadIdx.y; n < N;
         n += int64_t{gridDim.y} * kRowLanes) {
      acc += load(dy_NH, n * H + h) * load(x_NH, n * H + h) * rstd_N[n];
    }
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && h < H) {
    float total = 0.0f;
    for (int j = 0; j < kRowLanes; ++j) total += sums[j][threadIdx.x];
    partial_PH[blockIdx.y * H + h] = total;
  }
}

__global__ void add_partials_kernel(const float* partial_PH, float* out_H, int64_t P, int64_t H) {
  for (int64_t h = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; h < H;
       h += int64_t{gridDim.x} * blockDim.x) {
    float total = 0.0f;
    for (int64_t p = 0; p < P; ++p) total += partial_PH[p * H + h];
    out_H[h] += total;
  }
}

// ---- RoPE (one thread per rotated pair) -----------------------------------------------------
template <typename T>
__global__ void rope_kernel(const T* x, T* y, const int32_t* positions_N, int64_t N,
                            int64_t heads, int64_t d, float base, float sign) {
  const int64_t half = d / 2, pairs = N * heads * half;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < pairs;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k % half, row = k / half;  // row = n·heads + head
    const int64_t n = row / heads;
    double s, c;
    sincos(rope_angle(positions_N[n], i, d, base), &s, &c);
    const T* xr = x + row * d;
    T* yr = y + row * d;
    float y1, y2;
    rope_rotate(load(xr, i), load(xr, i + half), static_cast<float>(c),
                sign * static_cast<float>(s), &y1, &y2);
    store(yr, i, y1);  // x may equal y: both inputs were read above
    store(yr, i + half, y2);
  }
}

// ---- element-wise ----------------------------------------------------------------------------
template <typename T>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    store(out, i, swiglu_value(load(gate, i), load(up, i)));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* dout, const T* gate, const T* up, T* dgate,
                                       T* dup, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float dg, du;
    swiglu_gradient(load(dout, i), load(gate, i), load(up, i), &dg, &du);
    store(dgate, i, dg);
    store(dup, i, du);
  }
}

__global__ void sigmoid_forward_kernel(const float* z, float* s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    s[i] = sigmoid_value(z[i]);
  }
}

__global__ void sigmoid_backward_kernel(const float* ds, const float* s, float* dz, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dz[i] = sigmoid_gradient(ds[i], s[i]);
  }
}

// ---- router rows (one warp per row of E scores) ---------------------------------------------
constexpr int kRowsPerBlock = kThreads / kWarp;

__device__ __forceinline__ int64_t warp_row() {
  return blockIdx.x * int64_t{kRowsPerBlock} + threadIdx.x / kWarp;
}

__global__ void softmax_rows_kernel(const float* z_NE, float* p_NE, int64_t N, int64_t E) {
  const int64_t row = warp_row();
  if (row >= N) return;
  const int lane = threadIdx.x % kWarp;
  const float* z = z_NE + row * E;
  float* p = p_NE + row * E;
  float max = -INFINITY;
  for (int64_t e = lane; e < E; e += kWarp) max = fmaxf(max, z[e]);
  max = warp_max(max);
  float sum = 0.0f;
  for (int64_t e = lane; e < E; e += kWarp) sum += expf(z[e] - max);
  const float inv = 1.0f / warp_sum(sum);
  for (int64_t e = lane; e < E; e += kWarp) p[e] = expf(z[e] - max) * inv;
}

__global__ void softmax_rows_backward_kernel(const float* dp_NE, const float* p_NE, float* dz_NE,
                                             int64_t N, int64_t E) {
  const int64_t row = warp_row();
  if (row >= N) return;
  const int lane = threadIdx.x % kWarp;
  const float* dp = dp_NE + row * E;
  const float* p = p_NE + row * E;
  float dot = 0.0f;
  for (int64_t e = lane; e < E; e += kWarp) dot += dp[e] * p[e];
  dot = warp_sum(dot);
  for (int64_t e = lane; e < E; e += kWarp) dz_NE[row * E + e] = softmax_gradient(dp[e], p[e], dot);
}

__global__ void logsumexp_rows_kernel(const float* z_NE, float* out_N, int64_t N, int64_t E) {
  const int64_t row = warp_row();
  if (row >= N) return;
  const int lane = threadIdx.x % kWarp;
  const float* z = z_NE + row * E;
  float max = -INFINITY;
  for (int64_t e = lane; e < E; e += kWarp) max = fmaxf(max, z[e]);
  max = warp_max(max);
  if (max == -INFINITY) {
    if (lane == 0) out_N[row] = max;
    return;
  }
  float sum = 0.0f;
  for (int64_t e = lane; e < E; e += kWarp) sum += expf(z[e] - max);
  sum = warp_sum(sum);
  if (lane == 0) out_N[row] = max + logf(sum);
}

unsigned warp_row_blocks(int64_t N) {
  return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
}

// ---- launches shared by the float32 and bf16 entry points ------------------------------------
template <typename T>
void launch_rmsnorm_backward(CudaBackend& backend, const T* dy, const T* x, const T* w,
                             const float* rstd, T* dx, float* dw, int64_t N, int64_t H,
                             bool accumulate_dx) {
  if (N == 0) return;
  const cudaStream_t stream = backend.stream();
  rmsnorm_backward_dx_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, stream>>>(
      dy, x, w, rstd, dx, H, accumulate_dx);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  const int64_t slices = std::min<int64_t>((N + 63) / 64, 128);
  CudaBackend::Scratch partial(backend, sizeof(float) * slices * H);
  const dim3 grid(static_cast<unsigned>((H + kWarp - 1) / kWarp), static_cast<unsigned>(slices));
  rmsnorm_dw_partial_kernel<T><<<grid, dim3(kWarp, kRowLanes), 0, stream>>>(
      dy, x, rstd, partial.as<float>(), N, H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
  add_partials_kernel<<<blocks_for(H), kThreads, 0, stream>>>(partial.as<float>(), dw, slices,
                                                              H);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

// sign +1: the rotation (forward); −1: its inverse, which is its adjoint (backward).
template <typename T>
void launch_rope(CudaBackend& backend, const T* x, T* y, const int32_t* positions, int64_t N,
                 int64_t heads, int64_t d, float base, float sign) {
  MOEFOLD_CHECK(d % 2 == 0, "RoPE head dim must be even, got " << d);
  if (N == 0) return;
  auto positions_dev = backend.upload(positions, N);
  rope_kernel<T><<<blocks_for(N * heads * d / 2), kThreads, 0, backend.stream()>>>(
      x, y, positions_dev->template as<int32_t>(), N, heads, d, base, sign);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace

void CudaBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                                  int64_t N, int64_t H, float eps) {
  if (N == 0) return;
  rmsnorm_forward_kernel<float><<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(
      x, w, y, rstd, H, eps);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::rmsnorm_forward_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y,
                                       float* rstd, int64_t N, int64_t H, float eps) {
  if (N == 0) return;
  rmsnorm_forward_kernel<uint16_t><<<static_cast<unsigned>(N), kThreads, 0, stream_>>>(
      x, w, y, rstd, H, eps);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::rmsnorm_backward(const float* dy, const float* x, const float* w,
                                   const float* rstd, float* dx, float* dw, int64_t N, int64_t H,
                                   bool accumulate_dx) {
  launch_rmsnorm_backward(*this, dy, x, w, rstd, dx, dw, N, H, accumulate_dx);
}

void CudaBackend::rmsnorm_backward_bf16(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                                        const float* rstd, uint16_t* dx, float* dw, int64_t N,
                                        int64_t H, bool accumulate_dx) {
  launch_rmsnorm_backward(*this, dy, x, w, rstd, dx, dw, N, H, accumulate_dx);
}

void CudaBackend::rope_forward(const float* x, float* y, const int32_t* positions, int64_t N,
                               int64_t heads, int64_t d, float base) {
  launch_rope(*this, x, y, positions, N, heads, d, base, 1.0f);
}

void CudaBackend::rope_backward(const float* dy, float* dx, const int32_t* positions, int64_t N,
                                int64_t heads, int64_t d, float base) {
  launch_rope(*this, dy, dx, positions, N, heads, d, base, -1.0f);
}

void CudaBackend::rope_forward_bf16(const uint16_t* x, uint16_t* y, const int32_t* positions,
                                    int64_t N, int64_t heads, int64_t d, float base) {
  launch_rope(*this, x, y, positions, N, heads, d, base, 1.0f);
}

void CudaBackend::rope_backward_bf16(const uint16_t* dy, uint16_t* dx, const int32_t* positions,
                                     int64_t N, int64_t heads, int64_t d, float base) {
  launch_rope(*this, dy, dx, positions, N, heads, d, base, -1.0f);
}

void CudaBackend::swiglu_forward(const float* gate, const float* up, float* out, int64_t n) {
  if (n == 0) return;
  swiglu_forward_kernel<float><<<blocks_for(n), kThreads, 0, stream_>>>(gate, up, out, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::swiglu_forward_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                      int64_t n) {
  if (n == 0) return;
  swiglu_forward_kernel<uint16_t><<<blocks_for(n), kThreads, 0, stream_>>>(gate, up, out, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::swiglu_backward(const float* dout, const float* gate, const float* up,
                                  float* dgate, float* dup, int64_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<float><<<blocks_for(n), kThreads, 0, stream_>>>(
      dout, gate, up, dgate, dup, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::swiglu_backward_bf16(const uint16_t* dout, const uint16_t* gate,
                                       const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                                       int64_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<uint16_t><<<blocks_for(n), kThreads, 0, stream_>>>(
      dout, gate, up, dgate, dup, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::softmax_rows_forward(const float* z, float* p, int64_t N, int64_t E) {
  if (N == 0) return;
  softmax_rows_kernel<<<warp_row_blocks(N), kThreads, 0, stream_>>>(z, p, N, E);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::softmax_rows_backward(const float* dp, const float* p, float* dz, int64_t N,
                                        int64_t E) {
  if (N == 0) return;
  softmax_rows_backward_kernel<<<warp_row_blocks(N), kThreads, 0, stream_>>>(dp, p, dz, N, E);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::sigmoid_forward(const float* z, float* s, int64_t n) {
  if (n == 0) return;
  sigmoid_forward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(z, s, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) {
  if (n == 0) return;
  sigmoid_backward_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(ds, s, dz, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::logsumexp_rows(const float* z, float* out, int64_t N, int64_t E) {
  if (N == 0) return;
  logsumexp_rows_kernel<<<warp_row_blocks(N), kThreads, 0, stream_>>>(z, out, N, E);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::cuda
