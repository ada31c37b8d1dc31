#include "tensor/ops.h"

#include <cstring>

#include "tensor/check.h"
#include "tensor/cpu/permute.h"
#include "tensor/cpu/router.h"

namespace moefold::ops {
namespace {

// The backend all of an op's tensors live on (checked: one device, float32, defined).
template <class... Tensors>
Backend& backend_of(const Tensor& first, const Tensors&... rest) {
  const auto check = [&](const Tensor& t) {
    MOEFOLD_CHECK(t.defined() && t.dtype() == DType::kFloat32,
                  "op operand " << t.shape_string() << " is "
                                << (t.defined() ? dtype_name(t.dtype()) : "undefined"));
    MOEFOLD_CHECK(t.device() == first.device(), "op operands on different devices");
  };
  check(first);
  (check(rest), ...);
  return backend_for(first.device());
}

float* f(const Tensor& t) { return t.data(); }

// Rows of a 2-D view of t with `cols` columns (checked to divide).
int64_t rows_of(const Tensor& t, int64_t cols) {
  MOEFOLD_CHECK(cols > 0 && t.numel() % cols == 0,
                t.shape_string() << " is not a whole number of rows of " << cols);
  return t.numel() / cols;
}

void expect_numel(const Tensor& t, int64_t n, const char* what) {
  MOEFOLD_CHECK(t.numel() == n, what << " " << t.shape_string() << " should hold " << n);
}

// Out-parameter that may be undefined (skipped).
float* optional(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

}  // namespace

void zero(const Tensor& t) { backend_for(t.device()).zero(t.raw_data(), t.nbytes()); }

void fill(const Tensor& t, float value) { backend_of(t).fill(f(t), value, t.numel()); }

void copy(const Tensor& dst, const Tensor& src) {
  MOEFOLD_CHECK(dst.numel() == src.numel() && dst.dtype() == src.dtype(),
                "copy of " << src.shape_string() << " into " << dst.shape_string());
  if (src.device() == dst.device()) {
    backend_for(dst.device()).copy(dst.raw_data(), src.raw_data(), dst.nbytes());
  } else if (dst.device() == Device::kCpu) {
    backend_for(src.device()).copy_to_host(dst.raw_data(), src.raw_data(), dst.nbytes());
  } else {
    MOEFOLD_CHECK(src.device() == Device::kCpu, "copies between two devices go through the host");
    backend_for(dst.device()).copy_from_host(dst.raw_data(), src.raw_data(), dst.nbytes());
  }
}

void copy_memory(void* dst, const void* src, size_t bytes) {
  const Device to = device_of_pointer(dst), from = device_of_pointer(src);
  if (to == from) {
    backend_for(to).copy(dst, src, bytes);
  } else if (to == Device::kCpu) {
    backend_for(from).copy_to_host(dst, src, bytes);
  } else {
    MOEFOLD_CHECK(from == Device::kCpu, "copies between two devices go through the host");
    backend_for(to).copy_from_host(dst, src, bytes);
  }
}

void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows,
               int64_t cols) {
  const Device device = device_of_pointer(dst);
  MOEFOLD_CHECK(device_of_pointer(src) == device, "copy_rows between devices");
  backend_for(device).copy_rows(dst, dst_stride, src, src_stride, rows, cols);
}

Tensor to_host(const Tensor& t) { return to_device(t, Device::kCpu); }

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  copy(out, t);
  return out;
}

void add(const Tensor& y, const Tensor& x) {
  expect_numel(x, y.numel(), "add operand");
  backend_of(y, x).add(f(y), f(x), y.numel());
}

void axpy(const Tensor& y, float a, const Tensor& x) {
  expect_numel(x, y.numel(), "axpy operand");
  backend_of(y, x).axpy(f(y), a, f(x), y.numel());
}

void scale(const Tensor& x, float a) { backend_of(x).scale(f(x), a, x.numel()); }

double square_sum(const Tensor& x) { return backend_of(x).square_sum(f(x), x.numel()); }

double sum(const Tensor& x) { return backend_of(x).sum(f(x), x.numel()); }

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) {
  const int64_t O = w.dim(0), I = w.numel() / O, N = rows_of(x, I);
  expect_numel(y, N * O, "linear output");
  backend_of(x, w, y).linear_forward(f(x), f(w), f(y), N, I, O, accumulate);
}

void linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx, bool accumulate) {
  const int64_t O = w.dim(0), I = w.numel() / O, N = rows_of(dy, O);
  expect_numel(dx, N * I, "linear dx");
  backend_of(dy, w, dx).linear_backward_dx(f(dy), f(w), f(dx), N, I, O, accumulate);
}

void linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw) {
  const int64_t O = dw.dim(0), I = dw.numel() / O, N = rows_of(dy, O);
  expect_numel(x, N * I, "linear input");
  backend_of(dy, x, dw).linear_backward_dw(f(dy), f(x), f(dw), N, I, O);
}

namespace {

struct GroupedShape {
  int64_t G, O, I;
};

GroupedShape grouped_shape(const Tensor& w, std::span<const int64_t> offsets) {
  MOEFOLD_CHECK(w.ndim() == 3, "grouped weights " << w.shape_string() << " are (G,O,I)");
  const GroupedShape s{w.dim(0), w.dim(1), w.dim(2)};
  MOEFOLD_CHECK(static_cast<int64_t>(offsets.size()) == s.G + 1,
                offsets.size() << " offsets for " << s.G << " groups");
  return s;
}

}  // namespace

void grouped_linear_forward(const Tensor& x, const Tensor& w, const Tensor& y,
                            std::span<const int64_t> offsets) {
  const auto [G, O, I] = grouped_shape(w, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(x.numel() >= N * I && y.numel() >= N * O, "grouped GEMM rows");
  backend_of(x, w, y).grouped_linear_forward(f(x), f(w), f(y), offsets.data(), G, I, O);
}

void grouped_linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx,
                                std::span<const int64_t> offsets, bool accumulate) {
  const auto [G, O, I] = grouped_shape(w, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(dy.numel() >= N * O && dx.numel() >= N * I, "grouped GEMM rows");
  backend_of(dy, w, dx).grouped_linear_backward_dx(f(dy), f(w), f(dx), offsets.data(), G, I, O,
                                                   accumulate);
}

void grouped_linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw,
                                std::span<const int64_t> offsets) {
  const auto [G, O, I] = grouped_shape(dw, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(dy.numel() >= N * O && x.numel() >= N * I, "grouped GEMM rows");
  backend_of(dy, x, dw).grouped_linear_backward_dw(f(dy), f(x), f(dw), offsets.data(), G, I, O);
}

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
  backend_of(q, k, v, o, lse)
      .attention_forward(f(q), f(k), f(v), f(o), f(lse), q_pos.data(), k_pos.data(), s.batch,
                         s.q_len, s.kv_len, s.heads, s.kv_heads, s.head_dim);
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& o, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv, std::span<const int32_t> q_pos,
                        std::span<const int32_t> k_pos, const AttentionShape& s) {
  check_attention(q, k, lse, q_pos, k_pos, s);
  for (const Tensor* t : {&dout, &o, &dq}) expect_numel(*t, q.numel(), "attention q-shaped");
  for (const Tensor* t : {&v, &dk, &dv}) expect_numel(*t, k.numel(), "attention k-shaped");
  backend_of(dout, q, k, v, o, lse, dq, dk, dv)
      .attention_backward(f(dout), f(q), f(k), f(v), f(o), f(lse), f(dq), f(dk), f(dv),
                          q_pos.data(), k_pos.data(), s.batch, s.q_len, s.kv_len, s.heads,
                          s.kv_heads, s.head_dim);
}

void attention_merge(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b,
                     const Tensor& lse_b, const AttentionShape& s) {
  const int64_t rows = s.batch * s.q_len * s.heads;
  for (const Tensor* t : {&o_a, &o_b}) expect_numel(*t, rows * s.head_dim, "merged o");
  for (const Tensor* t : {&lse_a, &lse_b}) expect_numel(*t, rows, "merged lse");
  backend_of(o_a, lse_a, o_b, lse_b)
      .attention_merge(f(o_a), f(lse_a), f(o_b), f(lse_b), s.batch, s.q_len, s.heads,
                       s.head_dim);
}

void rmsnorm_forward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& rstd,
                     float eps) {
  const int64_t H = w.numel(), N = rows_of(x, H);
  expect_numel(y, N * H, "rmsnorm y");
  expect_numel(rstd, N, "rmsnorm rstd");
  backend_of(x, w, y, rstd).rmsnorm_forward(f(x), f(w), f(y), f(rstd), N, H, eps);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw, bool accumulate_dx) {
  const int64_t H = w.numel(), N = rows_of(x, H);
  for (const Tensor* t : {&dy, &dx}) expect_numel(*t, N * H, "rmsnorm gradient");
  expect_numel(rstd, N, "rmsnorm rstd");
  expect_numel(dw, H, "rmsnorm dw");
  backend_of(dy, x, w, rstd, dx, dw)
      .rmsnorm_backward(f(dy), f(x), f(w), f(rstd), f(dx), f(dw), N, H, accumulate_dx);
}

void rope_forward(const Tensor& x, const Tensor& y, std::span<const int32_t> positions,
                  int64_t heads, int64_t head_dim, float base) {
  const int64_t N = rows_of(x, heads * head_dim);
  MOEFOLD_CHECK(static_cast<int64_t>(positions.size()) == N, "rope positions");
  expect_numel(y, x.numel(), "rope output");
  backend_of(x, y).rope_forward(f(x), f(y), positions.data(), N, heads, head_dim, base);
}

void rope_backward(const Tensor& dy, const Tensor& dx, std::span<const int32_t> positions,
                   int64_t heads, int64_t head_dim, float base) {
  const int64_t N = rows_of(dy, heads * head_dim);
  MOEFOLD_CHECK(static_cast<int64_t>(positions.size()) == N, "rope positions");
  expect_numel(dx, dy.numel(), "rope dx");
  backend_of(dy, dx).rope_backward(f(dy), f(dx), positions.data(), N, heads, head_dim, base);
}

void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) {
  const int64_t n = gate.numel();
  expect_numel(up, n, "swiglu up");
  expect_numel(out, n, "swiglu out");
  backend_of(gate, up, out).swiglu_forward(f(gate), f(up), f(out), n);
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                     const Tensor& dup) {
  const int64_t n = gate.numel();
  for (const Tensor* t : {&dout, &up, &dgate, &dup}) expect_numel(*t, n, "swiglu operand");
  backend_of(dout, gate, up, dgate, dup)
      .swiglu_backward(f(dout), f(gate), f(up), f(dgate), f(dup), n);
}

void softmax_rows_forward(const Tensor& z, const Tensor& p) {
  const int64_t E = z.dim(-1), N = rows_of(z, E);
  expect_numel(p, z.numel(), "softmax output");
  backend_of(z, p).softmax_rows_forward(f(z), f(p), N, E);
}

void softmax_rows_backward(const Tensor& dp, const Tensor& p, const Tensor& dz) {
  const int64_t E = p.dim(-1), N = rows_of(p, E);
  expect_numel(dp, p.numel(), "softmax dp");
  expect_numel(dz, p.numel(), "softmax dz");
  backend_of(dp, p, dz).softmax_rows_backward(f(dp), f(p), f(dz), N, E);
}

void sigmoid_forward(const Tensor& z, const Tensor& s) {
  expect_numel(s, z.numel(), "sigmoid output");
  backend_of(z, s).sigmoid_forward(f(z), f(s), z.numel());
}

void sigmoid_backward(const Tensor& ds, const Tensor& s, const Tensor& dz) {
  expect_numel(ds, s.numel(), "sigmoid ds");
  expect_numel(dz, s.numel(), "sigmoid dz");
  backend_of(ds, s, dz).sigmoid_backward(f(ds), f(s), f(dz), s.numel());
}

void logsumexp_rows(const Tensor& z, const Tensor& out) {
  const int64_t E = z.dim(-1), N = rows_of(z, E);
  expect_numel(out, N, "logsumexp output");
  backend_of(z, out).logsumexp_rows(f(z), f(out), N, E);
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
  backend_of(x, out).permute_tokens(f(x), perm.data(), f(out), R, K, H);
}

void permute_tokens_backward(const Tensor& dout, std::span<const int32_t> perm, const Tensor& dx,
                             int64_t K) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = dx.dim(-1);
  MOEFOLD_CHECK(dout.numel() >= R * H, "permuted rows");
  backend_of(dout, dx).permute_tokens_backward(f(dout), perm.data(), f(dx), R, K, H);
}

void combine_tokens(const Tensor& y, std::span<const int32_t> perm, const Tensor& weights,
                    const Tensor& out) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = out.dim(-1), K = weights.dim(-1);
  MOEFOLD_CHECK(y.numel() >= R * H, "combined rows");
  backend_of(y, weights, out).combine_tokens(f(y), perm.data(), f(weights), f(out), R, K, H);
}

void combine_tokens_backward(const Tensor& dout, const Tensor& y, std::span<const int32_t> perm,
                             const Tensor& weights, const Tensor& dy, const Tensor& dweights) {
  const int64_t R = static_cast<int64_t>(perm.size()), H = dout.dim(-1), K = weights.dim(-1);
  MOEFOLD_CHECK(y.numel() >= R * H && dy.numel() >= R * H, "combined rows");
  expect_numel(dweights, weights.numel(), "combine dweights");
  backend_of(dout, y, weights, dy, dweights)
      .combine_tokens_backward(f(dout), f(y), perm.data(), f(weights), f(dy), f(dweights), R, K,
                               H);
}

void embedding_forward(std::span<const int32_t> tokens, const Tensor& table, const Tensor& out,
                       int64_t vocab, int64_t first_row) {
  const int64_t H = table.dim(-1), rows = rows_of(table, H);
  const int64_t N = static_cast<int64_t>(tokens.size());
  expect_numel(out, N * H, "embedding output");
  backend_of(table, out).embedding_forward(tokens.data(), f(table), f(out), N, vocab, first_row,
                                           rows, H);
}

void embedding_backward(const Tensor& dout, std::span<const int32_t> tokens, const Tensor& dtable,
                        int64_t vocab, int64_t first_row) {
  const int64_t H = dtable.dim(-1), rows = rows_of(dtable, H);
  const int64_t N = static_cast<int64_t>(tokens.size());
  expect_numel(dout, N * H, "embedding gradient");
  backend_of(dout, dtable).embedding_backward(f(dout), tokens.data(), f(dtable), N, vocab,
                                              first_row, rows, H);
}

double cross_entropy_forward_backward(const Tensor& h, const Tensor& w,
                                      std::span<const int32_t> labels,
                                      std::span<const float> mask, float grad_scale,
                                      const Tensor& dh, const Tensor& dw, int64_t chunk_rows) {
  const int64_t V = w.dim(0), H = w.numel() / V, N = rows_of(h, H);
  MOEFOLD_CHECK(static_cast<int64_t>(labels.size()) == N && (mask.empty() || mask.size() == labels.size()),
                "cross-entropy labels and mask");
  if (dh.defined()) expect_numel(dh, N * H, "cross-entropy dh");
  if (dw.defined()) expect_numel(dw, V * H, "cross-entropy dw");
  return backend_of(h, w).cross_entropy_forward_backward(
      f(h), f(w), labels.data(), mask.empty() ? nullptr : mask.data(), grad_scale, optional(dh),
      optional(dw), N, H, V, chunk_rows);
}

void rows_max(const Tensor& z, std::span<float> row_max) {
  const int64_t N = static_cast<int64_t>(row_max.size()), Vl = z.dim(-1);
  MOEFOLD_CHECK(z.numel() >= N * Vl, "rows_max rows");
  backend_of(z).rows_max(f(z), row_max.data(), N, Vl);
}

void exp_shifted_rows(const Tensor& z, std::span<const float> row_max,
                      std::span<const int32_t> labels, std::span<const float> mask,
                      std::span<double> sums, std::span<double> label_logit, int64_t first) {
  const int64_t N = static_cast<int64_t>(row_max.size()), Vl = z.dim(-1);
  MOEFOLD_CHECK(z.numel() >= N * Vl && labels.size() >= row_max.size() &&
                    sums.size() >= row_max.size() && label_logit.size() >= row_max.size(),
                "exp_shifted_rows sizes");
  backend_of(z).exp_shifted_rows(f(z), row_max.data(), labels.data(),
                                 mask.empty() ? nullptr : mask.data(), sums.data(),
                                 label_logit.data(), N, Vl, first);
}

void softmax_gradient_rows(const Tensor& z, std::span<const double> totals,
                           std::span<const int32_t> labels, std::span<const float> mask,
                           float grad_scale, int64_t first) {
  const int64_t N = static_cast<int64_t>(totals.size()), Vl = z.dim(-1);
  MOEFOLD_CHECK(z.numel() >= N * Vl && labels.size() >= totals.size(),
                "softmax_gradient_rows sizes");
  backend_of(z).softmax_gradient_rows(f(z), totals.data(), labels.data(),
                                      mask.empty() ? nullptr : mask.data(), grad_scale, N, Vl,
                                      first);
}

void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWScalars& scalars) {
  const int64_t n = param.numel();
  for (const Tensor* t : {&grad, &exp_avg, &exp_avg_sq}) expect_numel(*t, n, "AdamW state");
  backend_of(param, grad, exp_avg, exp_avg_sq)
      .adamw_step(f(param), f(grad), f(exp_avg), f(exp_avg_sq), n, scalars);
}

}  // namespace moefold::ops
