// The layers' ops of tensor/ops.h: attention, normalisation, RoPE, SwiGLU, router, token
// permutation, embedding and cross-entropy (ops.cpp holds memory, element-wise, GEMMs and AdamW).
#include "tensor/cpu/permute.h"
#include "tensor/cpu/router.h"
#include "tensor/ops.h"
#include "tensor/ops_operands.h"

namespace moefold::ops {

using internal::expect_numel;
using internal::Operands;
using internal::rows_of;

namespace {

void check_attention(const Tensor& q, const Tensor& k, const Tensor& lse,
                     std::span<const int32_t> q_pos, std::span<const int32_t> k_pos,
                     const AttentionShape& s) {
  expect_numel(q, s.batch * s.q_len * s.heads * s.head_dim, "attention q");
  expect_numel(k, s.batch * s.kv_len * s.kv_heads * s.head_dim, "attention k");
  expect_numel(lse, s.batch * s.heads * s.q_len, "attention lse");
  MOEFOLD_CHECK(static_cast<int64_t>(q_pos.size()) == s.q_len &&
                    static_cast<int64_t>(k_pos.size()) == s.kv_len,
                "attention positions");
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                       const Tensor& lse, std::span<const int32_t> q_pos,
                       std::span<const int32_t> k_pos, const AttentionShape& s) {
  check_attention(q, k, lse, q_pos, k_pos, s);
  expect_numel(v, k.numel(), "attention v");
  expect_numel(o, q.numel(), "attention o");
  Operands a("attention_forward", q);
  if (a.all_bf16({&q, &k, &v, &o})) {
    a.backend().attention_forward_bf16(a.bits(q), a.bits(k), a.bits(v), a.bits(o), a.f32(lse),
                                       q_pos.data(), k_pos.data(), s.batch, s.q_len, s.kv_len,
                                       s.heads, s.kv_heads, s.head_dim);
    return;
  }
  a.backend().attention_forward(a.in(q), a.in(k), a.in(v), a.out(o), a.f32(lse), q_pos.data(),
                                k_pos.data(), s.batch, s.q_len, s.kv_len, s.heads, s.kv_heads,
                                s.head_dim);
  a.finish();
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& o, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv, std::span<const int32_t> q_pos,
                        std::span<const int32_t> k_pos, const AttentionShape& s) {
  check_attention(q, k, lse, q_pos, k_pos, s);
  for (const Tensor* t : {&dout, &o, &dq}) expect_numel(*t, q.numel(), "attention q-shaped");
  for (const Tensor* t : {&v, &dk, &dv}) expect_numel(*t, k.numel(), "attention k-shaped");
  Operands a("attention_backward", dout);
  // dK and dV may be float32 under bf16 (ring attention's travelling sums).
  if (a.all_bf16({&dout, &q, &k, &v, &o, &dq}) && dk.dtype() == dv.dtype()) {
    a.backend().attention_backward_bf16(a.bits(dout), a.bits(q), a.bits(k), a.bits(v), a.bits(o),
                                        a.f32(lse), a.bits(dq), a.gemm_out(dk), a.gemm_out(dv),
                                        q_pos.data(), k_pos.data(), s.batch, s.q_len, s.kv_len,
                                        s.heads, s.kv_heads, s.head_dim);
    return;
  }
  a.backend().attention_backward(a.in(dout), a.in(q), a.in(k), a.in(v), a.in(o), a.f32(lse),
                                 a.out(dq), a.out(dk), a.out(dv), q_pos.data(), k_pos.data(),
                                 s.batch, s.q_len, s.kv_len, s.heads, s.kv_heads, s.head_dim);
  a.finish();
}

void attention_merge(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b,
                     const Tensor& lse_b, const AttentionShape& s) {
  const int64_t rows = s.batch * s.q_len * s.heads;
  for (const Tensor* t : {&o_a, &o_b}) expect_numel(*t, rows * s.head_dim, "merged o");
  for (const Tensor* t : {&lse_a, &lse_b}) expect_numel(*t, rows, "merged lse");
  Operands a("attention_merge", o_a);
  if (a.all_bf16({&o_a, &o_b})) {  // ring attention's bf16 partial outputs
    return a.backend().attention_merge_bf16(a.bits(o_a), a.f32(lse_a), a.bits(o_b),
                                            a.f32(lse_b), s.batch, s.q_len, s.heads,
                                            s.head_dim);
  }
  a.backend().attention_merge(a.out(o_a), a.f32(lse_a), a.in(o_b), a.f32(lse_b), s.batch,
                              s.q_len, s.heads, s.head_dim);
  a.finish();
}

void rmsnorm_forward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd,
                     float eps) {
  const int64_t H = w.numel(), N = rows_of(x, H);
  expect_numel(y, N * H, "rmsnorm y");
  expect_numel(rstd, N, "rmsnorm rstd");
  Operands a("rmsnorm_forward", x);
  if (a.all_bf16({&x, &w, &y})) {
    return a.backend().rmsnorm_forward_bf16(a.bits(x), a.bits(w), a.bits(y), a.f32(rstd), N, H,
                                            eps);
  }
  a.backend().rmsnorm_forward(a.in(x), a.in(w), a.out(y), a.f32(rstd), N, H, eps);
  a.finish();
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw, bool accumulate_dx) {
  const int64_t H = w.numel(), N = rows_of(x, H);
  for (const Tensor* t : {&dy, &dx}) expect_numel(*t, N * H, "rmsnorm gradient");
  expect_numel(rstd, N, "rmsnorm rstd");
  expect_numel(dw, H, "rmsnorm dw");
  Operands a("rmsnorm_backward", dy);
  if (a.all_bf16({&dy, &x, &w, &dx}) && a.all_of(DType::kFloat32, {&dw})) {
    return a.backend().rmsnorm_backward_bf16(a.bits(dy), a.bits(x), a.bits(w), a.f32(rstd),
                                             a.bits(dx), dw.data(), N, H, accumulate_dx);
  }
  a.backend().rmsnorm_backward(a.in(dy), a.in(x), a.in(w), a.f32(rstd), a.out(dx), a.out(dw), N,
                               H, accumulate_dx);
  a.finish();
}

void rope_forward(const Tensor& x, const Tensor& y, std::span<const int32_t> positions,
                  int64_t heads, int64_t head_dim, float base) {
  const int64_t N = rows_of(x, heads * head_dim);
  MOEFOLD_CHECK(static_cast<int64_t>(positions.size()) == N, "rope positions");
  expect_numel(y, x.numel(), "rope output");
  Operands a("rope_forward", x);
  if (a.all_bf16({&x, &y})) {
    return a.backend().rope_forward_bf16(a.bits(x), a.bits(y), positions.data(), N, heads,
                                         head_dim, base);
  }
  a.backend().rope_forward(a.in(x), a.out(y), positions.data(), N, heads, head_dim, base);
  a.finish();
}

void rope_backward(const Tensor& dy, const Tensor& dx, std::span<const int32_t> positions,
                   int64_t heads, int64_t head_dim, float base) {
  const int64_t N = rows_of(dy, heads * head_dim);
  MOEFOLD_CHECK(static_cast<int64_t>(positions.size()) == N, "rope positions");
  expect_numel(dx, dy.numel(), "rope dx");
  Operands a("rope_backward", dy);
  if (a.all_bf16({&dy, &dx})) {
    return a.backend().rope_backward_bf16(a.bits(dy), a.bits(dx), positions.data(), N, heads,
                                          head_dim, base);
  }
  a.backend().rope_backward(a.in(dy), a.out(dx), positions.data(), N, heads, head_dim, base);
  a.finish();
}

void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = gate.numel();
  expect_numel(up, n, "swiglu up");
  expect_numel(out, n, "swiglu out");
  Operands a("swiglu_forward", gate);
  if (a.all_bf16({&gate, &up, &out})) {
    return a.backend().swiglu_forward_bf16(a.bits(gate), a.bits(up), a.bits(out), n);
  }
  a.backend().swiglu_forward(a.in(gate), a.in(up), a.out(out), n);
  a.finish();
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                     const Tensor& dup) {
  const int64_t n = gate.numel();
  for (const Tensor* t : {&dout, &up, &dgate, &dup}) expect_numel(*t, n, "swiglu operand");
  Operands a("swiglu_backward", dout);
  if (a.all_bf16({&dout, &gate, &up, &dgate, &dup})) {
    return a.backend().swiglu_backward_bf16(a.bits(dout), a.bits(gate), a.bits(up),
                                            a.bits(dgate), a.bits(dup), n);
  }
  a.backend().swiglu_backward(a.in(dout), a.in(gate), a.in(up), a.out(dgate), a.out(dup), n);
  a.finish();
}

void softmax_rows_forward(const Tensor& z, const Tensor& p) {
  const int64_t E = z.dim(-1), N = rows_of(z, E);
  expect_numel(p, z.numel(), "softmax output");
  Operands a("softmax_rows_forward", z);
  a.backend().softmax_rows_forward(a.f32(z), a.f32(p), N, E);
}

void softmax_rows_backward(const Tensor& dp, const Tensor& p, const Tensor& dz) {
  const int64_t E = p.dim(-1), N = rows_of(p, E);
  expect_numel(dp, p.numel(), "softmax dp");
  expect_numel(dz, p.numel(), "softmax dz");
  Operands a("softmax_rows_backward", dp);
  a.backend().softmax_rows_backward(a.f32(dp), a.f32(p), a.f32(dz), N, E);
}

void sigmoid_forward(const Tensor& z, const Tensor& s) {
  expect_numel(s, z.numel(), "sigmoid output");
  Operands a("sigmoid_forward", z);
  a.backend().sigmoid_forward(a.f32(z), a.f32(s), z.numel());
}

void sigmoid_backward(const Tensor& ds, const Tensor& s, const Tensor& dz) {
  expect_numel(ds, s.numel(), "sigmoid ds");
  expect_numel(dz, s.numel(), "sigmoid dz");
  Operands a("sigmoid_backward", ds);
  a.backend().sigmoid_backward(a.f32(ds), a.f32(s), a.f32(dz), s.numel());
}

void logsumexp_rows(const Tensor& z, const Tensor& out) {
  const int64_t E = z.dim(-1), N = rows_of(z, E);
  expect_numel(out, N, "logsumexp output");
  Operands a("logsumexp_rows", z);
  a.backend().logsumexp_rows(a.f32(z), a.f32(out), N, E);
}

void topk_rows(const float* scores, int64_t N, int64_t E, int64_t k, int32_t* idx, float* val) {
  cpu::topk_rows(scores, N, E, k, idx, val);
}

int64_t build_expert_permutation(const int32_t* idx, const uint8_t* keep, int64_t N, int64_t K,
                                 int64_t E, int64_t* counts, int32_t* perm) {
  return cpu::build_expert_permutation(idx, keep, N, K, E, counts, perm);
}

void permute_tokens(const Tensor& x, std::span<const int32_t> perm, const Tensor& out,
                    int64_t K) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = x.dim(-1);
  MOEFOLD_CHECK(out.numel() >= R * H, "permuted rows");
  Operands a("permute_tokens", x);
  if (a.all_bf16({&x, &out})) {
    return a.backend().permute_tokens_bf16(a.bits(x), perm.data(), a.bits(out), x.numel() / H, R,
                                           K, H);
  }
  a.backend().permute_tokens(a.in(x), perm.data(), a.out(out), R, K, H);
  a.finish();
}

void permute_tokens_backward(const Tensor& dout, std::span<const int32_t> perm, const Tensor& dx,
                             int64_t K) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = dx.dim(-1);
  MOEFOLD_CHECK(dout.numel() >= R * H, "permuted rows");
  Operands a("permute_tokens_backward", dout);
  if (a.all_bf16({&dout, &dx})) {
    return a.backend().permute_tokens_backward_bf16(a.bits(dout), perm.data(), a.bits(dx),
                                                    dx.numel() / H, R, K, H);
  }
  a.backend().permute_tokens_backward(a.in(dout), perm.data(), a.out(dx), R, K, H);
  a.finish();
}

void combine_tokens(const Tensor& y, std::span<const int32_t> perm, const Tensor& weights,
                    const Tensor& out) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = out.dim(-1), K = weights.dim(-1);
  MOEFOLD_CHECK(y.numel() >= R * H, "combined rows");
  Operands a("combine_tokens", y);
  if (a.all_bf16({&y, &out})) {
    return a.backend().combine_tokens_bf16(a.bits(y), perm.data(), a.f32(weights), a.bits(out),
                                           out.numel() / H, R, K, H);
  }
  a.backend().combine_tokens(a.in(y), perm.data(), a.f32(weights), a.out(out), R, K, H);
  a.finish();
}

void combine_tokens_backward(const Tensor& dout, const Tensor& y, std::span<const int32_t> perm,
                             const Tensor& weights, const Tensor& dy, const Tensor& dweights) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = dout.dim(-1), K = weights.dim(-1);
  MOEFOLD_CHECK(y.numel() >= R * H && dy.numel() >= R * H, "combined rows");
  expect_numel(dweights, weights.numel(), "combine dweights");
  Operands a("combine_tokens_backward", dout);
  if (a.all_bf16({&dout, &y, &dy})) {
    return a.backend().combine_tokens_backward_bf16(a.bits(dout), a.bits(y), perm.data(),
                                                    a.f32(weights), a.bits(dy), a.f32(dweights),
                                                    dout.numel() / H, R, K, H);
  }
  a.backend().combine_tokens_backward(a.in(dout), a.in(y), perm.data(), a.f32(weights), a.out(dy),
                                      a.f32(dweights), R, K, H);
  a.finish();
}

void embedding_forward(std::span<const int32_t> tokens, const Tensor& table, const Tensor& out,
                       int64_t vocab, int64_t first_row) {
  const int64_t H = table.dim(-1), rows = rows_of(table, H);
  const int64_t N = static_cast<int64_t>(tokens.size());
  expect_numel(out, N * H, "embedding output");
  Operands a("embedding_forward", table);
  if (a.all_bf16({&table, &out})) {
    return a.backend().embedding_forward_bf16(tokens.data(), a.bits(table), a.bits(out), N,
                                              vocab, first_row, rows, H);
  }
  a.backend().embedding_forward(tokens.data(), a.in(table), a.out(out), N, vocab, first_row,
                                rows, H);
  a.finish();
}

void embedding_backward(const Tensor& dout, std::span<const int32_t> tokens, const Tensor& dtable,
                        int64_t vocab, int64_t first_row) {
  const int64_t H = dtable.dim(-1), rows = rows_of(dtable, H);
  const int64_t N = static_cast<int64_t>(tokens.size());
  expect_numel(dout, N * H, "embedding gradient");
  Operands a("embedding_backward", dout);
  if (a.all_bf16({&dout}) && a.all_of(DType::kFloat32, {&dtable})) {
    return a.backend().embedding_backward_bf16(a.bits(dout), tokens.data(), dtable.data(), N,
                                               vocab, first_row, rows, H);
  }
  a.backend().embedding_backward(a.in(dout), tokens.data(), a.out(dtable), N, vocab, first_row,
                                 rows, H);
  a.finish();
}

void cross_entropy_forward_backward(const Tensor& h, const Tensor& w,
                                    std::span<const int32_t> labels, std::span<const float> mask,
                                    float grad_scale, const Tensor& dh, const Tensor& dw,
                                    int64_t chunk_rows, const Tensor& loss_sum) {
  const int64_t V = w.dim(0), H = w.numel() / V, N = rows_of(h, H);
  MOEFOLD_CHECK(static_cast<int64_t>(labels.size()) == N && (mask.empty() || mask.size() == labels.size()),
                "cross-entropy labels and mask");
  if (dh.defined()) expect_numel(dh, N * H, "cross-entropy dh");
  if (dw.defined()) expect_numel(dw, V * H, "cross-entropy dw");
  expect_numel(loss_sum, 2, "cross-entropy loss sum (one float64)");
  Operands a("cross_entropy_forward_backward", h);
  a.f32(loss_sum);  // checks that it is on h's device
  double* loss = float64_data(loss_sum);
  if (a.all_bf16({&h, &w}) && (!dh.defined() || a.all_bf16({&dh})) &&
      (!dw.defined() || a.all_of(DType::kFloat32, {&dw}))) {
    return a.backend().cross_entropy_forward_backward_bf16(
        a.bits(h), a.bits(w), labels.data(), mask.empty() ? nullptr : mask.data(), grad_scale,
        dh.defined() ? a.bits(dh) : nullptr, dw.defined() ? dw.data() : nullptr, loss, N, H, V,
        chunk_rows);
  }
  a.backend().cross_entropy_forward_backward(
      a.in(h), a.in(w), labels.data(), mask.empty() ? nullptr : mask.data(), grad_scale,
      a.optional_out(dh), a.optional_out(dw), loss, N, H, V, chunk_rows);
  a.finish();
}

double cross_entropy_forward_backward(const Tensor& h, const Tensor& w,
                                      std::span<const int32_t> labels,
                                      std::span<const float> mask, float grad_scale,
                                      const Tensor& dh, const Tensor& dw, int64_t chunk_rows) {
  const Tensor loss_sum = float64_zeros(1, h.device());
  cross_entropy_forward_backward(h, w, labels, mask, grad_scale, dh, dw, chunk_rows, loss_sum);
  return float64_to_host(loss_sum)[0];
}

namespace {

// Raw float64 results of a vocabulary-parallel op must be on its tensors' device.
void expect_on(Device device, std::initializer_list<const void*> results, const char* op) {
  for (const void* result : results) {
    MOEFOLD_CHECK(device_of_pointer(result) == device,
                  "ops::" << op << ": a float64 operand is not on " << device_name(device));
  }
}

// Columns of a vocabulary shard z whose first `rows` rows an op reads.
int64_t shard_columns(const Tensor& z, int64_t rows, const char* op) {
  const int64_t Vl = z.dim(-1);
  MOEFOLD_CHECK(z.numel() >= rows * Vl, "ops::" << op << ": " << rows << " rows of "
                                                << z.shape_string());
  return Vl;
}

}  // namespace

void rows_max(const Tensor& z, const Tensor& row_max, int64_t rows) {
  const int64_t Vl = shard_columns(z, rows, "rows_max");
  MOEFOLD_CHECK(row_max.numel() >= rows, "rows_max: " << row_max.shape_string() << " for "
                                                      << rows << " rows");
  Operands a("rows_max", z);
  a.backend().rows_max(a.f32(z), a.f32(row_max), rows, Vl);
}

void exp_shifted_rows(const Tensor& z, const Tensor& row_max, std::span<const int32_t> labels,
                      std::span<const float> mask, double* sums, double* label_logit,
                      int64_t first) {
  const int64_t rows = static_cast<int64_t>(labels.size());
  const int64_t Vl = shard_columns(z, rows, "exp_shifted_rows");
  expect_on(z.device(), {sums, label_logit}, "exp_shifted_rows");
  MOEFOLD_CHECK(row_max.numel() >= rows && (mask.empty() || mask.size() == labels.size()),
                "exp_shifted_rows sizes");
  Operands a("exp_shifted_rows", z);
  a.backend().exp_shifted_rows(a.f32(z), a.f32(row_max), labels.data(),
                               mask.empty() ? nullptr : mask.data(), sums, label_logit, rows, Vl,
                               first);
}

void vocab_parallel_loss(const Tensor& row_max, const double* sums, const double* label_logit,
                         std::span<const float> mask, int64_t rows, const Tensor& loss_sum) {
  MOEFOLD_CHECK(row_max.numel() >= rows &&
                    (mask.empty() || static_cast<int64_t>(mask.size()) == rows),
                "vocab_parallel_loss sizes");
  expect_numel(loss_sum, 2, "vocab-parallel loss sum (one float64)");
  expect_on(row_max.device(), {sums, label_logit}, "vocab_parallel_loss");
  Operands a("vocab_parallel_loss", row_max);
  a.backend().vocab_parallel_loss(sums, label_logit, a.f32(row_max),
                                  mask.empty() ? nullptr : mask.data(), rows,
                                  float64_data(loss_sum));
}

void softmax_gradient_rows(const Tensor& z, const double* totals, std::span<const int32_t> labels,
                           std::span<const float> mask, float grad_scale, int64_t first) {
  const int64_t rows = static_cast<int64_t>(labels.size());
  const int64_t Vl = shard_columns(z, rows, "softmax_gradient_rows");
  expect_on(z.device(), {totals}, "softmax_gradient_rows");
  MOEFOLD_CHECK(mask.empty() || mask.size() == labels.size(), "softmax_gradient_rows mask");
  Operands a("softmax_gradient_rows", z);
  a.backend().softmax_gradient_rows(a.f32(z), totals, labels.data(),
                                    mask.empty() ? nullptr : mask.data(), grad_scale, rows, Vl,
                                    first);
}

}  // namespace moefold::ops
