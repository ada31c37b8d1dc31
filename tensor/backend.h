// The backend seam (DESIGN.md "Backends"): one interface per device, in the spirit of
// ggml-backend and TransformerEngine's C API. A backend owns its device's memory (allocator,
// copies to and from the host), its ordering primitives (a compute stream and events; trivial on
// CPU) and the whole op set that the model, the optimizer and communication use, forward and
// backward. The op methods take raw device pointers and sizes; layers never call them directly,
// they call tensor/ops.h, which checks shapes and dtypes and dispatches on Tensor::device().
//
// Float tensors live on the device. Index metadata that the host decides (positions, token ids,
// labels, the expert permutation, group offsets) is passed as host arrays; a device backend
// uploads what its kernels need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tensor/kernel_math.h"
#include "tensor/router_math.h"
#include "tensor/tensor.h"

namespace moefold {

// A point in a backend's compute stream. wait() blocks the host until the work recorded before
// it has finished.
class DeviceEvent {
 public:
  virtual ~DeviceEvent() = default;
  virtual void wait() = 0;
};

// A device→host copy in flight (Backend::start_copy_to_host): finish() returns once the host
// buffer holds the data.
class PendingHostCopy {
 public:
  virtual ~PendingHostCopy() = default;
  virtual void finish() = 0;
};

// A GEMM operand in the backend's memory with its storage type (float32 or bf16).
struct GemmInput {
  const void* data;
  DType dtype;
};
struct GemmOutput {
  void* data;
  DType dtype;
};

// One tensor of an AdamW step: n float32 elements of the parameter, its gradient and moments,
// and its weight decay (lr·weight_decay, or 0 for norm weights).
struct AdamWTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t n;
  float decay;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  // "cpu (OpenBLAS, 1 thread)", "cuda:0 (NVIDIA H100 80GB HBM3)".
  virtual std::string describe() const = 0;

  // Threads one rank's kernels may use (BLAS threads on CPU; a GPU ignores it).
  virtual void set_threads(int threads) {}
  // The device's published dense peak for `dtype` GEMMs in FLOP/s, or 0 when it has none (a
  // CPU, whose peak is measured instead).
  virtual double known_peak_flops(DType dtype) const { return 0.0; }
  // The best FLOP/s of repeated (n,n,n) GEMMs over about `seconds`, with the threads set.
  virtual double measure_gemm_flops(int n, double seconds) = 0;

  // ---- memory -------------------------------------------------------------------------------
  // Returns null when the device is out of memory (Tensor turns that into a clear error).
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  // True when `ptr` points into device memory this backend allocated (how MPI knows to stage).
  // Host backends answer false: host memory is what every other pointer is.
  virtual bool owns(const void* ptr) const { return false; }
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  // copy_to_host issued now and waited for at finish(), so that work issued in between keeps
  // the device busy while the host waits (the MoE layer's shared expert behind the routing
  // choices). The default copies at once.
  virtual std::unique_ptr<PendingHostCopy> start_copy_to_host(void* host_dst, const void* src,
                                                              size_t bytes);
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within the device
  virtual void zero(void* dst, size_t bytes) = 0;
  // rows × cols elements of element_bytes each between strided rows of one device
  // (cudaMemcpy2D's shape).
  virtual void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                         int64_t rows, int64_t cols, size_t element_bytes) = 0;

  // ---- bfloat16 storage (MODEL.md "Mixed precision") -----------------------------------------
  // dst = src exactly; and dst = src rounded to nearest, ties to even (kernel_math.h).
  virtual void widen_bf16(const uint16_t* src, float* dst, int64_t n);
  virtual void round_to_bf16(const float* src, uint16_t* dst, int64_t n);

  // ---- ordering -----------------------------------------------------------------------------
  // Bracket every host-issued op on this backend's memory (tensor/ops' Operands). Real devices
  // need nothing; the tests' stand-in device opens its memory to the host only in between, so
  // host code that dereferences device memory faults in CI as it would with a GPU.
  virtual void begin_op() {}
  virtual void end_op() {}

  virtual void synchronize() = 0;  // the host waits for all work issued so far
  virtual std::shared_ptr<DeviceEvent> record_event() = 0;

  // ---- dense and grouped GEMMs (row-major; weights [out, in], y = x Wᵀ) ----------------------
  // y (N,O) = x (N,I) · wᵀ (+ y when accumulate).
  virtual void linear_forward(const float* x, const float* w, float* y, int64_t N, int64_t I,
                              int64_t O, bool accumulate) = 0;
  // dx (N,I) = dy (N,O) · w (+ dx when accumulate).
  virtual void linear_backward_dx(const float* dy, const float* w, float* dx, int64_t N,
                                  int64_t I, int64_t O, bool accumulate) = 0;
  // dw (O,I) += dyᵀ · x.
  virtual void linear_backward_dw(const float* dy, const float* x, float* dw, int64_t N,
                                  int64_t I, int64_t O) = 0;
  // Experts: rows sorted by group, group g owns rows [offsets[g], offsets[g+1]) (host array of
  // G+1) and uses w[g] (O,I).
  virtual void grouped_linear_forward(const float* x, const float* w, float* y,
                                      const int64_t* offsets, int64_t G, int64_t I,
                                      int64_t O) = 0;
  virtual void grouped_linear_backward_dx(const float* dy, const float* w, float* dx,
                                          const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                          bool accumulate) = 0;
  virtual void grouped_linear_backward_dw(const float* dy, const float* x, float* dw,
                                          const int64_t* offsets, int64_t G, int64_t I,
                                          int64_t O) = 0;

  // ---- mixed-precision GEMMs (MODEL.md "Mixed precision") ------------------------------------
  // The six GEMMs above with each operand float32 or bf16: float32 accumulation, a bf16 output
  // rounded once (with accumulate, after adding its old value). The model passes bf16 operands
  // and float32 weight gradients (dw). The default widens each bf16 operand exactly into a
  // float32 temporary, calls the float32 op and rounds the bf16 outputs back (the CPU backend's
  // path); a device backend overrides them with native bf16 GEMMs.
  virtual void linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y, int64_t N, int64_t I,
                                    int64_t O, bool accumulate);
  virtual void linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx, int64_t N,
                                        int64_t I, int64_t O, bool accumulate);
  virtual void linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw, int64_t N,
                                        int64_t I, int64_t O);
  virtual void grouped_linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y,
                                            const int64_t* offsets, int64_t G, int64_t I,
                                            int64_t O);
  virtual void grouped_linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx,
                                                const int64_t* offsets, int64_t G, int64_t I,
                                                int64_t O, bool accumulate);
  virtual void grouped_linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw,
                                                const int64_t* offsets, int64_t G, int64_t I,
                                                int64_t O);

  // ---- attention (GQA, causal by positions; lse for ring merging) ----------------------------
  // q, o (B,Sq,nh,d); k, v (B,Skv,nkv,d); lse (B,nh,Sq); positions are host arrays.
  virtual void attention_forward(const float* q, const float* k, const float* v, float* o,
                                 float* lse, const int32_t* q_pos, const int32_t* k_pos,
                                 int64_t B, int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                                 int64_t d) = 0;
  // dq, dk, dv accumulate.
  virtual void attention_backward(const float* dout, const float* q, const float* k,
                                  const float* v, const float* o, const float* lse, float* dq,
                                  float* dk, float* dv, const int32_t* q_pos,
                                  const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                  int64_t nh, int64_t nkv, int64_t d) = 0;
  virtual void attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b,
                               int64_t B, int64_t Sq, int64_t nh, int64_t d) = 0;
  // The same with bf16 q, k, v, o (and dout, dq) and float32 lse (MODEL.md: the softmax stays
  // float32); dk and dv bf16 or float32 (ring attention sums the K/V gradients of a travelling
  // block in float32). The default widens each bf16 operand exactly into a float32 temporary,
  // calls the float32 op and rounds the bf16 outputs back (the CPU backend's path).
  virtual void attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                      uint16_t* o, float* lse, const int32_t* q_pos,
                                      const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                      int64_t nh, int64_t nkv, int64_t d);
  virtual void attention_backward_bf16(const uint16_t* dout, const uint16_t* q,
                                       const uint16_t* k, const uint16_t* v, const uint16_t* o,
                                       const float* lse, uint16_t* dq, GemmOutput dk,
                                       GemmOutput dv, const int32_t* q_pos, const int32_t* k_pos,
                                       int64_t B, int64_t Sq, int64_t Skv, int64_t nh,
                                       int64_t nkv, int64_t d);
  virtual void attention_merge_bf16(uint16_t* o_a, float* lse_a, const uint16_t* o_b,
                                    const float* lse_b, int64_t B, int64_t Sq, int64_t nh,
                                    int64_t d);

  // ---- row-wise and element-wise layers ------------------------------------------------------
  virtual void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t N,
                               int64_t H, float eps) = 0;
  virtual void rmsnorm_backward(const float* dy, const float* x, const float* w,
                                const float* rstd, float* dx, float* dw, int64_t N, int64_t H,
                                bool accumulate_dx) = 0;
  virtual void rope_forward(const float* x, float* y, const int32_t* positions, int64_t N,
                            int64_t heads, int64_t d, float base) = 0;
  virtual void rope_backward(const float* dy, float* dx, const int32_t* positions, int64_t N,
                             int64_t heads, int64_t d, float base) = 0;
  virtual void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) = 0;
  virtual void swiglu_backward(const float* dout, const float* gate, const float* up,
                               float* dgate, float* dup, int64_t n) = 0;

  // ---- bf16 row-wise and element-wise layers (MODEL.md "Mixed precision") ---------------------
  // The layers above with bf16 activations and compute weights (loaded as bf16, computed in
  // float32, stored as bf16) and float32 statistics, gate weights and weight gradients. The
  // default widens each bf16 operand exactly into a float32 temporary, calls the float32 op and
  // rounds the bf16 outputs back (the CPU backend's path); a device backend loads bf16 directly.
  virtual void rmsnorm_forward_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y,
                                    float* rstd, int64_t N, int64_t H, float eps);
  virtual void rmsnorm_backward_bf16(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                                     const float* rstd, uint16_t* dx, float* dw, int64_t N,
                                     int64_t H, bool accumulate_dx);
  virtual void rope_forward_bf16(const uint16_t* x, uint16_t* y, const int32_t* positions,
                                 int64_t N, int64_t heads, int64_t d, float base);
  virtual void rope_backward_bf16(const uint16_t* dy, uint16_t* dx, const int32_t* positions,
                                  int64_t N, int64_t heads, int64_t d, float base);
  virtual void swiglu_forward_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                   int64_t n);
  virtual void swiglu_backward_bf16(const uint16_t* dout, const uint16_t* gate,
                                    const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                                    int64_t n);
  // The token-permutation ones also take N, the tokens (rows of x, dx, out and dout).
  virtual void permute_tokens_bf16(const uint16_t* x, const int32_t* perm, uint16_t* out,
                                   int64_t N, int64_t R, int64_t K, int64_t H);
  virtual void permute_tokens_backward_bf16(const uint16_t* dout, const int32_t* perm,
                                            uint16_t* dx, int64_t N, int64_t R, int64_t K,
                                            int64_t H);
  virtual void combine_tokens_bf16(const uint16_t* y, const int32_t* perm, const float* weights,
                                   uint16_t* out, int64_t N, int64_t R, int64_t K, int64_t H);
  virtual void combine_tokens_backward_bf16(const uint16_t* dout, const uint16_t* y,
                                            const int32_t* perm, const float* weights,
                                            uint16_t* dy, float* dweights, int64_t N, int64_t R,
                                            int64_t K, int64_t H);
  virtual void embedding_forward_bf16(const int32_t* tokens, const uint16_t* table,
                                      uint16_t* out, int64_t N, int64_t V, int64_t first_row,
                                      int64_t rows, int64_t H);
  virtual void embedding_backward_bf16(const uint16_t* dout, const int32_t* tokens,
                                       float* dtable, int64_t N, int64_t V, int64_t first_row,
                                       int64_t rows, int64_t H);
  virtual void add_bf16(uint16_t* y, const uint16_t* x, int64_t n);
  virtual void axpy_bf16(uint16_t* y, float a, const uint16_t* x, int64_t n);

  // ---- router ---------------------------------------------------------------------------------
  virtual void softmax_rows_forward(const float* z, float* p, int64_t N, int64_t E) = 0;
  virtual void softmax_rows_backward(const float* dp, const float* p, float* dz, int64_t N,
                                     int64_t E) = 0;
  virtual void sigmoid_forward(const float* z, float* s, int64_t n) = 0;
  virtual void sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) = 0;
  virtual void logsumexp_rows(const float* z, float* out, int64_t N, int64_t E) = 0;
  // Routing on the device, one row per token (tensor/router_math.h). For the n rows of z (n,E):
  // probs (n,E), idx (n,k) int32, gates (n,k) and, when lse is not null, lse (n). bias (E) may be
  // null.
  virtual void route_forward(const float* z, const float* bias, float* probs, int32_t* idx,
                             float* gates, float* lse, int64_t n,
                             const RouterRowConfig& config) = 0;
  // The balance and z losses' statistics into sums (groups·E + 1, float64, device):
  // sums[g·E + e] = Σ_t P[t,e] over the rows t of group row_group[t] (host, n; null: all in
  // group 0), P as router_balance_prob; then sums[groups·E] = Σ_t lse[t]² (0 when lse is null).
  // Accumulated in row order, deterministically.
  virtual void route_load_sums(const float* probs, const float* lse, const int32_t* row_group,
                               double* sums, int64_t n, int64_t groups,
                               const RouterRowConfig& config) = 0;
  // dz (n,E) = d loss / d z (router_row_backward) from dgates (n,k); keep (host, n·k) may be
  // null (all kept); counts (host, groups·E) are the balance loss's token counts per group and
  // row_group (host, n) each row's group (both read only with the balance loss; row_group null:
  // group 0); lse read only with the z-loss.
  virtual void route_backward(const float* dgates, const uint8_t* keep, const float* gates,
                              const float* probs, const float* z, const int32_t* idx,
                              const float* lse, const int64_t* counts, const int32_t* row_group,
                              float* dz, int64_t n, int64_t groups,
                              const RouterBackwardConfig& config) = 0;

  // ---- token permutation by expert (perm and weights' layout as tensor/cpu/permute.h) ---------
  virtual void permute_tokens(const float* x, const int32_t* perm, float* out, int64_t R,
                              int64_t K, int64_t H) = 0;
  virtual void permute_tokens_backward(const float* dout, const int32_t* perm, float* dx,
                                       int64_t R, int64_t K, int64_t H) = 0;
  virtual void combine_tokens(const float* y, const int32_t* perm, const float* weights,
                              float* out, int64_t R, int64_t K, int64_t H) = 0;
  virtual void combine_tokens_backward(const float* dout, const float* y, const int32_t* perm,
                                       const float* weights, float* dy, float* dweights,
                                       int64_t R, int64_t K, int64_t H) = 0;

  // ---- embedding (table: rows [first_row, first_row + rows) of the V-row vocabulary) --------
  // out[n] = table[tokens[n] − first_row] when the token is in the shard, else 0. Token ids
  // outside [0, V) fail a check.
  virtual void embedding_forward(const int32_t* tokens, const float* table, float* out, int64_t N,
                                 int64_t V, int64_t first_row, int64_t rows, int64_t H) = 0;
  // dtable[tokens[n] − first_row] += dout[n] for tokens in the shard.
  virtual void embedding_backward(const float* dout, const int32_t* tokens, float* dtable,
                                  int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                  int64_t H) = 0;

  // ---- cross-entropy -----------------------------------------------------------------------
  // Fused LM head + CE over chunks of rows (tensor/cpu/cross_entropy.h); adds Σ CE·mask to
  // loss_sum (one float64 in device memory, so the host need not wait for it). Labels and mask
  // are host arrays (checked there).
  virtual void cross_entropy_forward_backward(const float* h, const float* w,
                                              const int32_t* labels, const float* mask,
                                              float grad_scale, float* dh, float* dw,
                                              double* loss_sum, int64_t N, int64_t H, int64_t V,
                                              int64_t chunk_rows) = 0;
  // The same with bf16 h, w and dh (dh, dw may be null): float32 logits, loss and dw (MODEL.md).
  // The default widens h, w and dh and calls the float32 op (the CPU backend's path).
  virtual void cross_entropy_forward_backward_bf16(const uint16_t* h, const uint16_t* w,
                                                   const int32_t* labels, const float* mask,
                                                   float grad_scale, uint16_t* dh, float* dw,
                                                   double* loss_sum, int64_t N, int64_t H,
                                                   int64_t V, int64_t chunk_rows);
  // Vocabulary-parallel pieces over a shard z (N, Vl) holding columns [first, first+Vl); labels
  // and mask are host arrays, every other array is device memory (the reductions over the shards
  // between the pieces run on the device too). row_max (N) = max of each row.
  virtual void rows_max(const float* z, float* row_max, int64_t N, int64_t Vl) = 0;
  // z ← exp(z − row_max); sums (N) = Σ of each row; label_logit (N) = the label's logit before
  // the exp when this shard holds it (else untouched). Rows with mask 0 read no label.
  virtual void exp_shifted_rows(float* z, const float* row_max, const int32_t* labels,
                                const float* mask, double* sums, double* label_logit, int64_t N,
                                int64_t Vl, int64_t first) = 0;
  // loss_sum (one float64) += Σ_r mask_r·CE_r over the rows with mask ≠ 0, with CE_r from the
  // reduced sums, label logits and row maxima (row_math.h vocab_parallel_cross_entropy).
  virtual void vocab_parallel_loss(const double* sums, const double* label_logit,
                                   const float* row_max, const float* mask, int64_t N,
                                   double* loss_sum) = 0;
  // z (holding exp(z − max)) ← (z / total − onehot(label))·mask·grad_scale, totals (N).
  virtual void softmax_gradient_rows(float* z, const double* totals, const int32_t* labels,
                                     const float* mask, float grad_scale, int64_t N, int64_t Vl,
                                     int64_t first) = 0;

  // ---- optimizer ------------------------------------------------------------------------------
  // One AdamW update of every tensor (MODEL.md, kernel_math.h adamw_update) with the step's
  // scalars, precomputed by the caller, and each tensor's own decay (scalars.decay is not read).
  // A GPU updates them all in one launch (multi-tensor apply, tensor/multi_tensor.h).
  virtual void adamw_step(std::span<const AdamWTensor> tensors, const AdamWScalars& scalars) = 0;

  // ---- small ones -----------------------------------------------------------------------------
  virtual void fill(float* x, float value, int64_t n) = 0;
  virtual void add(float* y, const float* x, int64_t n) = 0;  // y += x
  virtual void axpy(float* y, float a, const float* x, int64_t n) = 0;  // y += a·x
  virtual void scale(float* x, float a, int64_t n) = 0;
  virtual double square_sum(const float* x, int64_t n) = 0;  // Σ x² in float64
  virtual double sum(const float* x, int64_t n) = 0;
  // Σ_i square_sum(xs[i], ns[i]), added in order, with one host wait for all of them (the
  // gradient norm over every gradient tensor). The default calls square_sum once per tensor.
  virtual double square_sum_total(std::span<const float* const> xs, std::span<const int64_t> ns);
};

// The backend of `device`; a clear error when this build or this machine has none.
Backend& backend_for(Device device);
// Registers a device backend (the CUDA library does this when it is linked and a GPU is seen).
void register_backend(std::unique_ptr<Backend> backend);
bool has_backend(Device device);
// The device whose memory `ptr` is in: kCpu unless a registered device backend owns it.
Device device_of_pointer(const void* ptr);

}  // namespace moefold
