// The CUDA backend: tensor/backend.h for Device::kCuda. Memory comes from a stream-ordered pool
// (cudaMallocAsync); every op is issued on one compute stream; GEMMs go through cuBLAS (float32,
// or bf16 on tensor cores); everything else is this folder's kernels, whose element-wise and
// row-wise math is tensor/kernel_math.h and tensor/row_math.h (shared with the CPU kernels and
// tested on CPU).
// Host-array metadata (positions, token ids, labels, the expert permutation) is uploaded here.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tensor/attention_path_tuner.h"
#include "tensor/attention_plan.h"
#include "tensor/backend.h"
#include "tensor/cuda/pinned_downloads.h"
#include "tensor/cuda/pinned_uploads.h"
#include "tensor/grouped_gemm_plan.h"

namespace moefold::cuda {

class CudaBackend final : public Backend {
 public:
  // Uses `device` (already selected with cudaSetDevice by the caller or not).
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  int ordinal() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  Device device() const override { return Device::kCuda; }
  std::string describe() const override;
  double known_peak_flops(DType dtype) const override;
  double measure_gemm_flops(int n, double seconds) override;

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  bool owns(const void* ptr) const override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  std::unique_ptr<PendingHostCopy> start_copy_to_host(void* host_dst, const void* src,
                                                      size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                 int64_t rows, int64_t cols, size_t element_bytes) override;

  void synchronize() override;
  std::shared_ptr<DeviceEvent> record_event() override;

  void linear_forward(const float* x, const float* w, float* y, int64_t N, int64_t I, int64_t O,
                      bool accumulate) override;
  void linear_backward_dx(const float* dy, const float* w, float* dx, int64_t N, int64_t I,
                          int64_t O, bool accumulate) override;
  void linear_backward_dw(const float* dy, const float* x, float* dw, int64_t N, int64_t I,
                          int64_t O) override;
  void grouped_linear_forward(const float* x, const float* w, float* y, const int64_t* offsets,
                              int64_t G, int64_t I, int64_t O) override;
  void grouped_linear_backward_dx(const float* dy, const float* w, float* dx,
                                  const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                  bool accumulate) override;
  void grouped_linear_backward_dw(const float* dy, const float* x, float* dw,
                                  const int64_t* offsets, int64_t G, int64_t I,
                                  int64_t O) override;
  void linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y, int64_t N, int64_t I,
                            int64_t O, bool accumulate) override;
  void linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx, int64_t N, int64_t I,
                                int64_t O, bool accumulate) override;
  void linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw, int64_t N, int64_t I,
                                int64_t O) override;
  void grouped_linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y,
                                    const int64_t* offsets, int64_t G, int64_t I,
                                    int64_t O) override;
  void grouped_linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx,
                                        const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                        bool accumulate) override;
  void grouped_linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw,
                                        const int64_t* offsets, int64_t G, int64_t I,
                                        int64_t O) override;

  void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse,
                         const int32_t* q_pos, const int32_t* k_pos, int64_t B, int64_t Sq,
                         int64_t Skv, int64_t nh, int64_t nkv, int64_t d) override;
  void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                          const float* o, const float* lse, float* dq, float* dk, float* dv,
                          const int32_t* q_pos, const int32_t* k_pos, int64_t B, int64_t Sq,
                          int64_t Skv, int64_t nh, int64_t nkv, int64_t d) override;
  void attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b, int64_t B,
                       int64_t Sq, int64_t nh, int64_t d) override;
  void attention_merge_bf16(uint16_t* o_a, float* lse_a, const uint16_t* o_b, const float* lse_b,
                            int64_t B, int64_t Sq, int64_t nh, int64_t d) override;
  // bf16 attention: the flash kernels (flash_attention.cu) for head dims 64 and 128, else cuBLAS
  // GEMMs over chunks of query rows (attention_bf16.cu).
  void attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                              uint16_t* o, float* lse, const int32_t* q_pos, const int32_t* k_pos,
                              int64_t B, int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                              int64_t d) override;
  void attention_backward_bf16(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                               const uint16_t* v, const uint16_t* o, const float* lse,
                               uint16_t* dq, GemmOutput dk, GemmOutput dv, const int32_t* q_pos,
                               const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                               int64_t nh, int64_t nkv, int64_t d) override;

  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N,
                       int64_t H, float eps) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                        float* dx, float* dw, int64_t N, int64_t H, bool accumulate_dx) override;
  void rope_forward(const float* x, float* y, const int32_t* positions, int64_t N, int64_t heads,
                    int64_t d, float base) override;
  void rope_backward(const float* dy, float* dx, const int32_t* positions, int64_t N,
                     int64_t heads, int64_t d, float base) override;
  void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) override;
  void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate,
                       float* dup, int64_t n) override;

  void rmsnorm_forward_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd,
                            int64_t N, int64_t H, float eps) override;
  void rmsnorm_backward_bf16(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                             const float* rstd, uint16_t* dx, float* dw, int64_t N, int64_t H,
                             bool accumulate_dx) override;
  void rope_forward_bf16(const uint16_t* x, uint16_t* y, const int32_t* positions, int64_t N,
                         int64_t heads, int64_t d, float base) override;
  void rope_backward_bf16(const uint16_t* dy, uint16_t* dx, const int32_t* positions, int64_t N,
                          int64_t heads, int64_t d, float base) override;
  void swiglu_forward_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                           int64_t n) override;
  void swiglu_backward_bf16(const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                            uint16_t* dgate, uint16_t* dup, int64_t n) override;
  void permute_tokens_bf16(const uint16_t* x, const int32_t* perm, uint16_t* out, int64_t N,
                           int64_t R, int64_t K, int64_t H) override;
  void permute_tokens_backward_bf16(const uint16_t* dout, const int32_t* perm, uint16_t* dx,
                                    int64_t N, int64_t R, int64_t K, int64_t H) override;
  void combine_tokens_bf16(const uint16_t* y, const int32_t* perm, const float* weights,
                           uint16_t* out, int64_t N, int64_t R, int64_t K, int64_t H) override;
  void combine_tokens_backward_bf16(const uint16_t* dout, const uint16_t* y, const int32_t* perm,
                                    const float* weights, uint16_t* dy, float* dweights,
                                    int64_t N, int64_t R, int64_t K, int64_t H) override;
  void embedding_forward_bf16(const int32_t* tokens, const uint16_t* table, uint16_t* out,
                              int64_t N, int64_t V, int64_t first_row, int64_t rows,
                              int64_t H) override;
  void embedding_backward_bf16(const uint16_t* dout, const int32_t* tokens, float* dtable,
                               int64_t N, int64_t V, int64_t first_row, int64_t rows,
                               int64_t H) override;
  void add_bf16(uint16_t* y, const uint16_t* x, int64_t n) override;
  void axpy_bf16(uint16_t* y, float a, const uint16_t* x, int64_t n) override;

  void softmax_rows_forward(const float* z, float* p, int64_t N, int64_t E) override;
  void softmax_rows_backward(const float* dp, const float* p, float* dz, int64_t N,
                             int64_t E) override;
  void sigmoid_forward(const float* z, float* s, int64_t n) override;
  void sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) override;
  void logsumexp_rows(const float* z, float* out, int64_t N, int64_t E) override;
  // Routing one row per thread (router_kernels.cu).
  void route_forward(const float* z, const float* bias, float* probs, int32_t* idx, float* gates,
                     float* lse, int64_t n, const RouterRowConfig& config) override;
  void route_load_sums(const float* probs, const float* lse, const int32_t* row_group,
                       double* sums, int64_t n, int64_t groups,
                       const RouterRowConfig& config) override;
  void route_backward(const float* dgates, const uint8_t* keep, const float* gates,
                      const float* probs, const float* z, const int32_t* idx, const float* lse,
                      const int64_t* counts, const int32_t* row_group, float* dz, int64_t n,
                      int64_t groups, const RouterBackwardConfig& config) override;

  void permute_tokens(const float* x, const int32_t* perm, float* out, int64_t R, int64_t K,
                      int64_t H) override;
  void permute_tokens_backward(const float* dout, const int32_t* perm, float* dx, int64_t R,
                               int64_t K, int64_t H) override;
  void combine_tokens(const float* y, const int32_t* perm, const float* weights, float* out,
                      int64_t R, int64_t K, int64_t H) override;
  void combine_tokens_backward(const float* dout, const float* y, const int32_t* perm,
                               const float* weights, float* dy, float* dweights, int64_t R,
                               int64_t K, int64_t H) override;

  void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N,
                         int64_t V, int64_t first_row, int64_t rows, int64_t H) override;
  void embedding_backward(const float* dout, const int32_t* tokens, float* dtable, int64_t N,
                          int64_t V, int64_t first_row, int64_t rows, int64_t H) override;

  void cross_entropy_forward_backward(const float* h, const float* w, const int32_t* labels,
                                      const float* mask, float grad_scale, float* dh, float* dw,
                                      double* loss_sum, int64_t N, int64_t H, int64_t V,
                                      int64_t chunk_rows) override;
  void cross_entropy_forward_backward_bf16(const uint16_t* h, const uint16_t* w,
                                           const int32_t* labels, const float* mask,
                                           float grad_scale, uint16_t* dh, float* dw,
                                           double* loss_sum, int64_t N, int64_t H, int64_t V,
                                           int64_t chunk_rows) override;
  void rows_max(const float* z, float* row_max, int64_t N, int64_t Vl) override;
  void exp_shifted_rows(float* z, const float* row_max, const int32_t* labels, const float* mask,
                        double* sums, double* label_logit, int64_t N, int64_t Vl,
                        int64_t first) override;
  void vocab_parallel_loss(const double* sums, const double* label_logit, const float* row_max,
                           const float* mask, int64_t N, double* loss_sum) override;
  void softmax_gradient_rows(float* z, const double* totals, const int32_t* labels,
                             const float* mask, float grad_scale, int64_t N, int64_t Vl,
                             int64_t first) override;

  void adamw_step(std::span<const AdamWTensor> tensors, const AdamWScalars& scalars) override;

  void fill(float* x, float value, int64_t n) override;
  void add(float* y, const float* x, int64_t n) override;
  void axpy(float* y, float a, const float* x, int64_t n) override;
  void scale(float* x, float a, int64_t n) override;
  void widen_bf16(const uint16_t* src, float* dst, int64_t n) override;
  void round_to_bf16(const float* src, uint16_t* dst, int64_t n) override;
  double square_sum(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;
  double square_sum_total(std::span<const float* const> xs,
                          std::span<const int64_t> ns) override;

  // Where the flash kernels fit, whether bf16 attention takes them always, never, or after
  // timing both paths once per shape class (tensor/attention_path_tuner.h; the default, which
  // MOEFOLD_FLASH_ATTENTION=1 or 0 overrides). Tests and benchmarks compare the two.
  void set_flash_attention_mode(FlashAttentionMode mode) { flash_mode_ = mode; }
  // The timed decisions so far, one line each.
  std::vector<std::string> attention_path_report() const { return attention_tuner_.report(); }
  // Whether this device runs the flash kernels at `head_dim` (decided once, at construction).
  bool flash_attention_serves(int64_t head_dim) const {
    return (head_dim == 64 && flash_d64_) || (head_dim == 128 && flash_d128_);
  }

  // Stream-ordered scratch memory for one op (freed on the stream after the op's kernels).
  class Scratch {
   public:
    Scratch(CudaBackend& backend, size_t bytes);
    ~Scratch();
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    template <typename T>
    T* as() const { return static_cast<T*>(ptr_); }

   private:
    CudaBackend& backend_;
    void* ptr_ = nullptr;
  };
  // A device copy of a host array, valid for the ops issued next on the stream.
  template <typename T>
  std::unique_ptr<Scratch> upload(const T* host, int64_t count) {
    auto buffer = std::make_unique<Scratch>(*this, sizeof(T) * static_cast<size_t>(count));
    if (count > 0) copy_from_host(buffer->as<void>(), host, sizeof(T) * count);
    return buffer;
  }

 private:
  // C (M,N) row-major = alpha·op(A)·op(B) + beta·C, on the stream (cuBLAS column-major mapping),
  // each operand float32 or bf16, accumulated in float32.
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            GemmInput A, int64_t lda, GemmInput B, int64_t ldb, float beta, GemmOutput C,
            int64_t ldc);

  // The expert GEMMs of a grouped op as one cublasGemmGroupedBatchedEx
  // (tensor/grouped_gemm_plan.h) where that call takes the operands (gemm.cu); false: the
  // caller runs one GEMM per expert.
  bool run_grouped(GroupedLinear op, GemmInput a, GemmInput b, GemmOutput c,
                   const int64_t* offsets, int64_t G, int64_t I, int64_t O, bool accumulate);

  // Runs a tensor/attention_plan.h plan (attention_bf16.cu) over `buffers`, with positions,
  // lse (read, or written by kSoftmax steps) and delta on the device.
  struct AttentionBuffers {
    void* data[kAttentionBuffers] = {};
    DType dtype[kAttentionBuffers] = {};
    void set(AttentionBuffer buffer, const float* p) { put(buffer, p, DType::kFloat32); }
    void set(AttentionBuffer buffer, const uint16_t* p) { put(buffer, p, DType::kBFloat16); }
    void put(AttentionBuffer buffer, const void* p, DType type) {
      data[static_cast<int>(buffer)] = const_cast<void*>(p);
      dtype[static_cast<int>(buffer)] = type;
    }
  };
  void run_attention_plan(const std::vector<AttentionStep>& plan, const AttentionBuffers& buffers,
                          const int32_t* q_pos, const int32_t* k_pos, const float* lse_in,
                          float* lse_out, const float* delta);
  // The chunked cuBLAS path of bf16 attention; the backward adds into dq32 (float32) and dK, dV
  // (bf16 or float32), given delta.
  void chunked_attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                      uint16_t* o, float* lse, const int32_t* q_pos,
                                      const int32_t* k_pos, const AttentionDims& dims);
  void chunked_attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                       const uint16_t* k, const uint16_t* v, const float* lse,
                                       const float* delta, float* dq32, GemmOutput dk,
                                       GemmOutput dv, const int32_t* q_pos, const int32_t* k_pos,
                                       const AttentionDims& dims);
  // Where both paths fit: whether `shape` takes the flash kernels. In the timed mode its first
  // call times `trial` (one run of either path on scratch outputs) for both, after a warm-up.
  bool prefer_flash(const AttentionShapeClass& shape,
                    const std::function<void(AttentionPath)>& trial);
  double seconds_on_stream(const std::function<void()>& run);  // after one untimed run

  // The flash kernels (flash_attention.cu): the head dims this device serves (kernels built for
  // sm_80+, shared memory that fits; their shared-memory opt-in is set here, once); whether they
  // take these operands (enabled, head dim, grid limits, 16-byte aligned rows); then the
  // forward, and the backward given delta
  // (rowsum(dO ⊙ O)), accumulating dQ in float32 (dq32) and dK, dV (bf16 or float32) in place.
  void set_up_flash_attention(const cudaDeviceProp& prop);
  bool flash_attention_fits(int64_t d, int64_t nh, int64_t nkv, int64_t B,
                            std::initializer_list<const void*> tensors) const;
  void flash_attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                    uint16_t* o, float* lse, const int32_t* q_pos,
                                    const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                    int64_t nh, int64_t nkv, int64_t d);
  void flash_attention_backward_bf16(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                                     const uint16_t* v, const float* lse, const float* delta,
                                     float* dq32, GemmOutput dk, GemmOutput dv,
                                     const int32_t* q_pos, const int32_t* k_pos, int64_t B,
                                     int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                                     int64_t d);

  // The fused LM head + cross-entropy over chunks of rows for float32 or bf16 h, w and dh
  // (dh.data and dw may be null), float32 logits and dw.
  void cross_entropy_chunks(GemmInput h, GemmInput w, const int32_t* labels, const float* mask,
                            float grad_scale, GemmOutput dh, float* dw, double* loss_sum,
                            int64_t N, int64_t H, int64_t V, int64_t chunk_rows);

  void bind_thread() const;  // makes this backend's device the calling thread's current one
  // Stream-ordered memory from the pool, or null when the device is full even after the pool
  // has given back every block it caches (fragmentation near the limit), as PyTorch retries.
  void* allocate_from_pool(size_t bytes);

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  std::unique_ptr<PinnedUploads> uploads_;  // copy_from_host's pinned staging
  std::unique_ptr<PinnedDownloads> downloads_;  // start_copy_to_host's pinned buffers
  std::string name_;
  int sm_major_ = 0, sm_minor_ = 0;
  FlashAttentionMode flash_mode_ = FlashAttentionMode::kTimed;
  AttentionPathTuner attention_tuner_;
  bool flash_d64_ = false, flash_d128_ = false;  // head dims the flash kernels serve here
};

// Typed GEMM operands (tensor/backend.h) over float32 or bf16 device pointers, and the operand
// `elements` elements further on.
inline GemmInput f32_in(const float* data) { return {data, DType::kFloat32}; }
inline GemmOutput f32_out(float* data) { return {data, DType::kFloat32}; }
inline GemmInput bf16_in(const uint16_t* data) { return {data, DType::kBFloat16}; }
inline GemmOutput bf16_out(uint16_t* data) { return {data, DType::kBFloat16}; }
inline GemmInput advance(GemmInput t, int64_t elements) {
  return {static_cast<const char*>(t.data) + elements * dtype_size(t.dtype), t.dtype};
}
inline GemmOutput advance(GemmOutput t, int64_t elements) {
  return {static_cast<char*>(t.data) + elements * dtype_size(t.dtype), t.dtype};
}

// Creates the backend for `device` and registers it as this process's Device::kCuda backend;
// an error naming the device when there is no such device or it cannot be used.
absl::Status register_cuda_backend(int device);

}  // namespace moefold::cuda
