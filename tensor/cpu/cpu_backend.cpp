#include "tensor/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstddef>
#include <cstring>

#include "tensor/check.h"
#include "tensor/cpu/attention.h"
#include "tensor/cpu/cross_entropy.h"
#include "tensor/cpu/embedding.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/permute.h"
#include "tensor/cpu/rmsnorm.h"
#include "tensor/cpu/rope.h"
#include "tensor/cpu/router.h"
#include "tensor/cpu/routing.h"
#include "tensor/cpu/swiglu.h"
#include "tensor/cpu/vec_math.h"
#include "tensor/row_math.h"

namespace moefold::cpu {
namespace {

constexpr size_t kAlignment = 64;  // cache line; also what AVX-512 loads like

// Work on the host is done when the call returns.
class CompletedEvent : public DeviceEvent {
 public:
  void wait() override {}
};

}  // namespace

Device CpuBackend::device() const { return Device::kCpu; }

std::string CpuBackend::describe() const { return "cpu (OpenBLAS)"; }

void CpuBackend::set_threads(int threads) { set_blas_threads(threads); }

double CpuBackend::measure_gemm_flops(int n, double seconds) {
  return measure_sgemm_gflops(n, seconds) * 1e9;
}

void* CpuBackend::allocate(size_t bytes) {
  const size_t rounded = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  return std::aligned_alloc(kAlignment, rounded);
}

void CpuBackend::deallocate(void* ptr, size_t) { std::free(ptr); }

void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }

void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }

void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
}

void CpuBackend::zero(void* dst, size_t bytes) {
  if (bytes > 0) std::memset(dst, 0, bytes);
}

void CpuBackend::widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
}

void CpuBackend::round_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
}

void CpuBackend::copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                           int64_t rows, int64_t cols, size_t element_bytes) {
  auto* out = static_cast<std::byte*>(dst);
  const auto* in = static_cast<const std::byte*>(src);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * dst_stride * element_bytes, in + r * src_stride * element_bytes,
                cols * element_bytes);
  }
}

void CpuBackend::synchronize() {}

std::shared_ptr<DeviceEvent> CpuBackend::record_event() {
  return std::make_shared<CompletedEvent>();
}

void CpuBackend::linear_forward(const float* x, const float* w, float* y, int64_t N, int64_t I,
                                int64_t O, bool accumulate) {
  gemm(false, true, N, O, I, 1.0f, x, I, w, I, accumulate ? 1.0f : 0.0f, y, O);
}

void CpuBackend::linear_backward_dx(const float* dy, const float* w, float* dx, int64_t N,
                                    int64_t I, int64_t O, bool accumulate) {
  cpu::linear_backward_dx(dy, w, dx, N, I, O, accumulate);
}

void CpuBackend::linear_backward_dw(const float* dy, const float* x, float* dw, int64_t N,
                                    int64_t I, int64_t O) {
  cpu::linear_backward_dw(dy, x, dw, N, I, O);
}

void CpuBackend::grouped_linear_forward(const float* x, const float* w, float* y,
                                        const int64_t* offsets, int64_t G, int64_t I, int64_t O) {
  cpu::grouped_linear_forward(x, w, y, offsets, G, I, O);
}

void CpuBackend::grouped_linear_backward_dx(const float* dy, const float* w, float* dx,
                                            const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                            bool accumulate) {
  cpu::grouped_linear_backward_dx(dy, w, dx, offsets, G, I, O, accumulate);
}

void CpuBackend::grouped_linear_backward_dw(const float* dy, const float* x, float* dw,
                                            const int64_t* offsets, int64_t G, int64_t I,
                                            int64_t O) {
  cpu::grouped_linear_backward_dw(dy, x, dw, offsets, G, I, O);
}

void CpuBackend::attention_forward(const float* q, const float* k, const float* v, float* o,
                                   float* lse, const int32_t* q_pos, const int32_t* k_pos,
                                   int64_t B, int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                                   int64_t d) {
  cpu::attention_forward(q, k, v, o, lse, q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
}

void CpuBackend::attention_backward(const float* dout, const float* q, const float* k,
                                    const float* v, const float* o, const float* lse, float* dq,
                                    float* dk, float* dv, const int32_t* q_pos,
                                    const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                    int64_t nh, int64_t nkv, int64_t d) {
  cpu::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
}

void CpuBackend::attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b,
                                 int64_t B, int64_t Sq, int64_t nh, int64_t d) {
  cpu::attention_merge(o_a, lse_a, o_b, lse_b, B, Sq, nh, d);
}

void CpuBackend::rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N,
                                 int64_t H, float eps) {
  cpu::rmsnorm_forward(x, w, y, rstd, N, H, eps);
}

void CpuBackend::rmsnorm_backward(const float* dy, const float* x, const float* w,
                                  const float* rstd, float* dx, float* dw, int64_t N, int64_t H,
                                  bool accumulate_dx) {
  cpu::rmsnorm_backward(dy, x, w, rstd, dx, dw, N, H, accumulate_dx);
}

void CpuBackend::rope_forward(const float* x, float* y, const int32_t* positions, int64_t N,
                              int64_t heads, int64_t d, float base) {
  cpu::rope_forward(x, y, positions, N, heads, d, base);
}

void CpuBackend::rope_backward(const float* dy, float* dx, const int32_t* positions, int64_t N,
                               int64_t heads, int64_t d, float base) {
  cpu::rope_backward(dy, dx, positions, N, heads, d, base);
}

void CpuBackend::swiglu_forward(const float* gate, const float* up, float* out, int64_t n) {
  cpu::swiglu_forward(gate, up, out, n);
}

void CpuBackend::swiglu_backward(const float* dout, const float* gate, const float* up,
                                 float* dgate, float* dup, int64_t n) {
  cpu::swiglu_backward(dout, gate, up, dgate, dup, n);
}

void CpuBackend::softmax_rows_forward(const float* z, float* p, int64_t N, int64_t E) {
  cpu::softmax_rows_forward(z, p, N, E);
}

void CpuBackend::softmax_rows_backward(const float* dp, const float* p, float* dz, int64_t N,
                                       int64_t E) {
  cpu::softmax_rows_backward(dp, p, dz, N, E);
}

void CpuBackend::sigmoid_forward(const float* z, float* s, int64_t n) {
  cpu::sigmoid_forward(z, s, n);
}

void CpuBackend::sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) {
  cpu::sigmoid_backward(ds, s, dz, n);
}

void CpuBackend::logsumexp_rows(const float* z, float* out, int64_t N, int64_t E) {
  cpu::logsumexp_rows(z, out, N, E);
}

void CpuBackend::route_forward(const float* z, const float* bias, float* probs, int32_t* idx,
                               float* gates, float* lse, int64_t n,
                               const RouterRowConfig& config) {
  cpu::route_forward(z, bias, probs, idx, gates, lse, n, config);
}

void CpuBackend::route_load_sums(const float* probs, const float* lse, const int32_t* row_group,
                                 double* sums, int64_t n, int64_t groups,
                                 const RouterRowConfig& config) {
  cpu::route_load_sums(probs, lse, row_group, sums, n, groups, config);
}

void CpuBackend::route_backward(const float* dgates, const uint8_t* keep, const float* gates,
                                const float* probs, const float* z, const int32_t* idx,
                                const float* lse, const int64_t* counts,
                                const int32_t* row_group, float* dz, int64_t n, int64_t groups,
                                const RouterBackwardConfig& config) {
  cpu::route_backward(dgates, keep, gates, probs, z, idx, lse, counts, row_group, dz, n, config);
}

void CpuBackend::permute_tokens(const float* x, const int32_t* perm, float* out, int64_t R,
                                int64_t K, int64_t H) {
  cpu::permute_tokens(x, perm, out, R, K, H);
}

void CpuBackend::permute_tokens_backward(const float* dout, const int32_t* perm, float* dx,
                                         int64_t R, int64_t K, int64_t H) {
  cpu::permute_tokens_backward(dout, perm, dx, R, K, H);
}

void CpuBackend::combine_tokens(const float* y, const int32_t* perm, const float* weights,
                                float* out, int64_t R, int64_t K, int64_t H) {
  cpu::combine_tokens(y, perm, weights, out, R, K, H);
}

void CpuBackend::combine_tokens_backward(const float* dout, const float* y, const int32_t* perm,
                                         const float* weights, float* dy, float* dweights,
                                         int64_t R, int64_t K, int64_t H) {
  cpu::combine_tokens_backward(dout, y, perm, weights, dy, dweights, R, K, H);
}

void CpuBackend::embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N,
                                   int64_t V, int64_t first_row, int64_t rows, int64_t H) {
  cpu::embedding_forward(tokens, table, out, N, V, first_row, rows, H);
}

void CpuBackend::embedding_backward(const float* dout, const int32_t* tokens, float* dtable,
                                    int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                    int64_t H) {
  cpu::embedding_backward(dout, tokens, dtable, N, V, first_row, rows, H);
}

void CpuBackend::cross_entropy_forward_backward(const float* h, const float* w,
                                                const int32_t* labels, const float* mask,
                                                float grad_scale, float* dh, float* dw,
                                                double* loss_sum, int64_t N, int64_t H, int64_t V,
                                                int64_t chunk_rows) {
  double chunks_sum = 0.0;
  cpu::cross_entropy_forward_backward(h, w, labels, mask, grad_scale, &chunks_sum, dh, dw, N, H,
                                      V, chunk_rows);
  *loss_sum += chunks_sum;
}

void CpuBackend::rows_max(const float* z, float* row_max, int64_t N, int64_t Vl) {
  for (int64_t r = 0; r < N; ++r) row_max[r] = max_value(z + r * Vl, Vl);
}

void CpuBackend::exp_shifted_rows(float* z, const float* row_max, const int32_t* labels,
                                  const float* mask, double* sums, double* label_logit, int64_t N,
                                  int64_t Vl, int64_t first) {
  for (int64_t r = 0; r < N; ++r) {
    float* zr = z + r * Vl;
    if (mask == nullptr || mask[r] != 0.0f) {
      const int64_t label = labels[r];
      if (label >= first && label < first + Vl) label_logit[r] = zr[label - first];
    }
    sums[r] = exp_shifted_sum(zr, row_max[r], zr, Vl);
  }
}

void CpuBackend::vocab_parallel_loss(const double* sums, const double* label_logit,
                                     const float* row_max, const float* mask, int64_t N,
                                     double* loss_sum) {
  for (int64_t r = 0; r < N; ++r) {
    const float m = mask ? mask[r] : 1.0f;
    if (m == 0.0f) continue;
    *loss_sum += vocab_parallel_cross_entropy(sums[r], row_max[r], label_logit[r], m);
  }
}

void CpuBackend::softmax_gradient_rows(float* z, const double* totals, const int32_t* labels,
                                       const float* mask, float grad_scale, int64_t N, int64_t Vl,
                                       int64_t first) {
  for (int64_t r = 0; r < N; ++r) {
    const float m = mask ? mask[r] : 1.0f;
    float* zr = z + r * Vl;
    const float weight = m * grad_scale;
    scale_in_place(zr, softmax_gradient_scale(weight, m, totals[r]), Vl);
    if (m == 0.0f) continue;
    const int64_t label = labels[r];
    if (label >= first && label < first + Vl) zr[label - first] -= weight;
  }
}

void CpuBackend::adamw_step(std::span<const AdamWTensor> tensors, const AdamWScalars& scalars) {
  for (const AdamWTensor& t : tensors) {
    AdamWScalars own = scalars;
    own.decay = t.decay;
    for (int64_t j = 0; j < t.n; ++j) {
      adamw_update(&t.param[j], t.grad[j], &t.exp_avg[j], &t.exp_avg_sq[j], own);
    }
  }
}

void CpuBackend::fill(float* x, float value, int64_t n) { std::fill(x, x + n, value); }

void CpuBackend::add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void CpuBackend::axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void CpuBackend::scale(float* x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

double CpuBackend::square_sum(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += double(x[i]) * x[i];
  return total;
}

double CpuBackend::sum(const float* x, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += x[i];
  return total;
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace moefold::cpu
