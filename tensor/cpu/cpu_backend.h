// The CPU backend: host memory, OpenBLAS GEMMs and the kernels of tensor/cpu/. Declared here
// (not only made by make_cpu_backend) so that tests can stand a host-memory "device" on it.
#pragma once

#include <memory>
#include <string>

#include "tensor/backend.h"

namespace moefold::cpu {

class CpuBackend : public Backend {
 public:
  Device device() const override;
  std::string describe() const override;
  void set_threads(int threads) override;
  double measure_gemm_flops(int n, double seconds) override;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void widen_bf16(const uint16_t* src, float* dst, int64_t n) override;
  void round_to_bf16(const float* src, uint16_t* dst, int64_t n) override;
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
                 int64_t cols, size_t element_bytes) override;
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
                                  const int64_t* offsets, int64_t G, int64_t I, int64_t O) override;
  void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse,
                         const int32_t* q_pos, const int32_t* k_pos, int64_t B, int64_t Sq,
                         int64_t Skv, int64_t nh, int64_t nkv, int64_t d) override;
  void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                          const float* o, const float* lse, float* dq, float* dk, float* dv,
                          const int32_t* q_pos, const int32_t* k_pos, int64_t B, int64_t Sq,
                          int64_t Skv, int64_t nh, int64_t nkv, int64_t d) override;
  void attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b, int64_t B,
                       int64_t Sq, int64_t nh, int64_t d) override;
  void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N, int64_t H,
                       float eps) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                        float* dx, float* dw, int64_t N, int64_t H, bool accumulate_dx) override;
  void rope_forward(const float* x, float* y, const int32_t* positions, int64_t N, int64_t heads,
                    int64_t d, float base) override;
  void rope_backward(const float* dy, float* dx, const int32_t* positions, int64_t N, int64_t heads,
                     int64_t d, float base) override;
  void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) override;
  void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate,
                       float* dup, int64_t n) override;
  void softmax_rows_forward(const float* z, float* p, int64_t N, int64_t E) override;
  void softmax_rows_backward(const float* dp, const float* p, float* dz, int64_t N,
                             int64_t E) override;
  void sigmoid_forward(const float* z, float* s, int64_t n) override;
  void sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) override;
  void logsumexp_rows(const float* z, float* out, int64_t N, int64_t E) override;
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
  double square_sum(const float* x, int64_t n) override;
  double sum(const float* x, int64_t n) override;
};

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace moefold::cpu
