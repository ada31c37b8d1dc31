// The op set every layer, the optimizer and communication call (DESIGN.md "Backends"): each op
// checks its tensors (same device, sizes) and runs on the backend of their device.
//
// Dtypes (MODEL.md "Mixed precision"): activations and weights may be bfloat16 or float32, and
// every op computes in float32 whatever its operands' storage (bf16 operands are read exactly,
// bf16 outputs are rounded to nearest even). Operands MODEL.md keeps in float32 (the norms'
// rstd, attention's lse, the router's logits and probabilities, the vocabulary shards' logits,
// the optimizer's tensors, combine weights) must be float32: a bf16 one is an error naming the
// op.
// Nothing above tensor/ names a backend. Shapes follow the kernels' conventions: row-major,
// weights [out, in], y = x Wᵀ; a tensor's leading dimensions are its rows.
//
// Index metadata decided on the host (positions, token ids, labels, the expert permutation,
// group offsets) is passed as host spans; float tensors stay on their device.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tensor/backend.h"
#include "tensor/tensor.h"

namespace moefold::ops {

// ---- memory ---------------------------------------------------------------------------------
void zero(const Tensor& t);
void fill(const Tensor& t, float value);
void copy(const Tensor& dst, const Tensor& src);  // same element count and dtype, any devices
// dst = src converted between float32 and bfloat16 (same device; same dtype is a copy).
void cast(const Tensor& dst, const Tensor& src);
// Raw memory by pointer, on whichever device each pointer lives (communication buffers).
void copy_memory(void* dst, const void* src, size_t bytes);
// y += x over n float32 elements by pointer, both on one device (received partial gradients).
void add_memory(float* y, const float* x, int64_t n);
// rows × cols elements of element_bytes each (float32 unless said): dst[r·dst_stride + c] =
// src[r·src_stride + c] (both on one device).
void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
               int64_t cols, size_t element_bytes = sizeof(float));
// A host copy of t's elements (no copy on the CPU backend: the same tensor).
Tensor to_host(const Tensor& t);
// to_host started now and waited for by wait() (the host's one wait), so that ops issued in
// between keep the device busy meanwhile (Backend::start_copy_to_host).
class HostCopy {
 public:
  HostCopy() = default;
  HostCopy(Tensor host, std::unique_ptr<PendingHostCopy> pending)
      : host_(std::move(host)), pending_(std::move(pending)) {}
  Tensor wait();  // the host copy; once only
  bool started() const { return host_.defined(); }

 private:
  Tensor host_;
  std::unique_ptr<PendingHostCopy> pending_;
};
HostCopy start_to_host(const Tensor& t);
// t on `device` (the same tensor when it is already there).
Tensor to_device(const Tensor& t, Device device);
// Every tensor's elements (float32, all on one device) on the host, one tensor after the other,
// read with one device→host copy: many small device values for one wait of the host.
std::vector<float> to_host_together(std::span<const Tensor> tensors);
// float64 values on a device, for sums that must not round (losses, cross-entropy row sums):
// moefold's tensors are float32 or bf16, so each value takes two float32 words of a (2n) tensor.
Tensor float64_zeros(int64_t n, Device device);
double* float64_data(const Tensor& words);
std::vector<double> float64_to_host(const Tensor& words);  // one device→host copy

// ---- element-wise and reductions --------------------------------------------------------------
void add(const Tensor& y, const Tensor& x);              // y += x
void axpy(const Tensor& y, float a, const Tensor& x);    // y += a·x
void scale(const Tensor& x, float a);                    // x *= a
double square_sum(const Tensor& x);                      // Σ x² (float64)
double sum(const Tensor& x);                             // Σ x (float64)
// Σ of square_sum over the tensors, in order, with one host wait on a device (gradient norms).
double square_sum_total(const std::vector<Tensor>& xs);

// ---- GEMMs ------------------------------------------------------------------------------------
// y (N,O) = x (N,I) · wᵀ, w (O,I); added to y when accumulate.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate = false);
// dx (N,I) = dy (N,O) · w; added to dx when accumulate.
void linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx, bool accumulate);
// dw (O,I) += dyᵀ · x.
void linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw);
// Experts: w (G,O,I); x's rows sorted by group, offsets (G+1, host) bound each group's rows.
void grouped_linear_forward(const Tensor& x, const Tensor& w, const Tensor& y,
                            std::span<const int64_t> offsets);
void grouped_linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx,
                                std::span<const int64_t> offsets, bool accumulate);
void grouped_linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw,
                                std::span<const int64_t> offsets);

// ---- attention ----------------------------------------------------------------------------
struct AttentionShape {
  int64_t batch, q_len, kv_len, heads, kv_heads, head_dim;
};
// q, o (B,Sq,nh,d); k, v (B,Skv,nkv,d); lse (B,nh,Sq) overwritten. Key j is visible to query i
// iff k_pos[j] <= q_pos[i] (host arrays of Sq and Skv).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                       const Tensor& lse, std::span<const int32_t> q_pos,
                       std::span<const int32_t> k_pos, const AttentionShape& shape);
// o, lse final; dq, dk, dv accumulate.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& o, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv, std::span<const int32_t> q_pos,
                        std::span<const int32_t> k_pos, const AttentionShape& shape);
// (o_a, lse_a) ← the merge of two partial results over disjoint key sets; kv sizes unused.
void attention_merge(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b,
                     const Tensor& lse_b, const AttentionShape& shape);

// ---- norms, RoPE, SwiGLU ----------------------------------------------------------------------
// y (N,H) = rmsnorm(x)·w, rstd (N) saved; y may alias x.
void rmsnorm_forward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd,
                     float eps);
// dx overwritten or accumulated; dw (H) += always.
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw, bool accumulate_dx);
// x, y (N, heads, d), in place allowed; positions (N, host).
void rope_forward(const Tensor& x, const Tensor& y, std::span<const int32_t> positions,
                  int64_t heads, int64_t head_dim, float base);
void rope_backward(const Tensor& dy, const Tensor& dx, std::span<const int32_t> positions,
                   int64_t heads, int64_t head_dim, float base);
void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                     const Tensor& dup);

// ---- router -------------------------------------------------------------------------------------
void softmax_rows_forward(const Tensor& z, const Tensor& p);  // (N,E)
void softmax_rows_backward(const Tensor& dp, const Tensor& p, const Tensor& dz);
void sigmoid_forward(const Tensor& z, const Tensor& s);
void sigmoid_backward(const Tensor& ds, const Tensor& s, const Tensor& dz);
void logsumexp_rows(const Tensor& z, const Tensor& out);  // z (N,E), out (N)
// Routing on the device (tensor/router_math.h; ops_router.cpp). The chosen experts idx (n,k)
// are int32 in device memory on z's device (raw memory: Tensor has no integer dtype), and the
// load sums float64 (groups·E + 1) likewise. Host arrays: row_group (n) each row's group of the
// balance statistics (empty: all in group 0), counts (groups·E) the balance loss's token counts,
// keep (n·k) the capacity mask (empty: all kept).
// probs (n,E), gates (n,k) and lse (n, when defined) from the logits z (n,E); bias (E) may be
// undefined.
void route_forward(const Tensor& z, const Tensor& bias, const Tensor& probs, int32_t* idx,
                   const Tensor& gates, const Tensor& lse, const RouterRowConfig& config);
// sums[g·E + e] = Σ_t P[t,e] over the rows of group g (groups may be 0), sums[groups·E] =
// Σ_t lse² (0 when lse is undefined), in float64 in row order (Backend::route_load_sums).
void route_load_sums(const Tensor& probs, const Tensor& lse, std::span<const int32_t> row_group,
                     int64_t groups, double* sums, const RouterRowConfig& config);
// dz (n,E) overwritten with d loss / d z (router_row_backward).
void route_backward(const Tensor& dgates, std::span<const uint8_t> keep, const Tensor& gates,
                    const Tensor& probs, const Tensor& z, const int32_t* idx, const Tensor& lse,
                    std::span<const int64_t> counts, std::span<const int32_t> row_group,
                    const Tensor& dz, const RouterBackwardConfig& config);
// Host-side routing decisions over host arrays:
// the k largest of each row, ties to the lower index (tensor/cpu/router.h).
void topk_rows(const float* scores, int64_t N, int64_t E, int64_t k, int32_t* idx, float* val);
// Sorts kept assignments by expert (tensor/cpu/permute.h); returns the kept count.
int64_t build_expert_permutation(const int32_t* idx, const uint8_t* keep, int64_t N, int64_t K,
                                 int64_t E, int64_t* counts, int32_t* perm);

// ---- token permutation (perm: host, R entries; assignment a = t·K + j) -------------------------
void permute_tokens(const Tensor& x, std::span<const int32_t> perm, const Tensor& out, int64_t K);
void permute_tokens_backward(const Tensor& dout, std::span<const int32_t> perm, const Tensor& dx,
                             int64_t K);
// out[t] += w[t,j]·y[r]; weights (N,K).
void combine_tokens(const Tensor& y, std::span<const int32_t> perm, const Tensor& weights,
                    const Tensor& out);
void combine_tokens_backward(const Tensor& dout, const Tensor& y, std::span<const int32_t> perm,
                             const Tensor& weights, const Tensor& dy, const Tensor& dweights);

// ---- embedding: table holds vocabulary rows [first_row, first_row + rows) of V ----------------
void embedding_forward(std::span<const int32_t> tokens, const Tensor& table, const Tensor& out,
                       int64_t vocab, int64_t first_row);
void embedding_backward(const Tensor& dout, std::span<const int32_t> tokens, const Tensor& dtable,
                        int64_t vocab, int64_t first_row);

// ---- cross-entropy ------------------------------------------------------------------------------
// Fused LM head: logits = h wᵀ in chunks, Σ CE·mask added to loss_sum (float64_zeros(1) on h's
// device: the host does not wait for it); dh overwritten and dw accumulated when grad_scale != 0
// and they are defined. mask may be empty (all ones).
void cross_entropy_forward_backward(const Tensor& h, const Tensor& w,
                                    std::span<const int32_t> labels, std::span<const float> mask,
                                    float grad_scale, const Tensor& dh, const Tensor& dw,
                                    int64_t chunk_rows, const Tensor& loss_sum);
// The same, returning Σ CE·mask (the host waits for it).
double cross_entropy_forward_backward(const Tensor& h, const Tensor& w,
                                      std::span<const int32_t> labels,
                                      std::span<const float> mask, float grad_scale,
                                      const Tensor& dh, const Tensor& dw, int64_t chunk_rows);
// Vocabulary-parallel pieces over the first labels.size() rows of a logits shard z (N, Vl) of
// columns [first, first + Vl), every result on z's device: row_max float32 (N), sums,
// label_logit and loss_sum float64 (float64_zeros); the reductions over the shards happen
// between them (lm_head).
void rows_max(const Tensor& z, const Tensor& row_max, int64_t rows);
void exp_shifted_rows(const Tensor& z, const Tensor& row_max, std::span<const int32_t> labels,
                      std::span<const float> mask, double* sums, double* label_logit,
                      int64_t first);
void vocab_parallel_loss(const Tensor& row_max, const double* sums, const double* label_logit,
                         std::span<const float> mask, int64_t rows, const Tensor& loss_sum);
void softmax_gradient_rows(const Tensor& z, const double* totals, std::span<const int32_t> labels,
                           std::span<const float> mask, float grad_scale, int64_t first);

// ---- optimizer ----------------------------------------------------------------------------------
// One AdamW update of every tensor (float32, one device), each with its own decay
// (scalars.decay is not read): on a GPU, one launch for them all.
struct AdamWOperands {
  Tensor param, grad, exp_avg, exp_avg_sq;
  float decay;
};
void adamw_step(std::span<const AdamWOperands> tensors, const AdamWScalars& scalars);

}  // namespace moefold::ops
