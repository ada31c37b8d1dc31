// Row-wise kernel math shared by the CPU and CUDA backends (as kernel_math.h is for element-wise
// math): the formulas that turn a row's reductions into its outputs. Each backend computes the
// reductions its own way (vectorised loops on CPU, warp/block reductions on a GPU) and then calls
// these, so the CPU tests check what the GPU computes.
#pragma once

#include <math.h>

#include <cstdint>

#include "tensor/kernel_math.h"

namespace moefold {

// ---- RMSNorm: y = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps) -----------------------------------
MOEFOLD_HOST_DEVICE float rmsnorm_rstd(float sum_of_squares, int64_t H, float eps) {
  return 1.0f / sqrtf(sum_of_squares / static_cast<float>(H) + eps);
}

// With x̂ = x·rstd and g = dy ⊙ w: dx = rstd·(g − x·coeff), coeff = Σ(dy·w·x)·rstd²/H.
MOEFOLD_HOST_DEVICE float rmsnorm_backward_coeff(float dot_dy_w_x, float rstd, int64_t H) {
  return dot_dy_w_x * rstd * rstd / static_cast<float>(H);
}

MOEFOLD_HOST_DEVICE float rmsnorm_dx(float dy, float w, float x, float rstd, float coeff) {
  return rstd * (dy * w - x * coeff);
}

// ---- RoPE: pairs (x[i], x[i + d/2]) rotate by θ_i(p) = p·base^(−2i/d) -------------------------
// Frequencies and angles in double, as the reference (HF/Megatron) tables are, so that long
// positions keep their precision.
MOEFOLD_HOST_DEVICE double rope_inv_freq(int64_t i, int64_t d, float base) {
  return pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / static_cast<double>(d));
}

MOEFOLD_HOST_DEVICE double rope_angle(int64_t position, int64_t i, int64_t d, float base) {
  return static_cast<double>(position) * rope_inv_freq(i, d, base);
}

// (y1, y2) = rotation of (x1, x2) by the angle with cosine c and (signed) sine s.
MOEFOLD_HOST_DEVICE void rope_rotate(float x1, float x2, float c, float s, float* y1, float* y2) {
  *y1 = x1 * c - x2 * s;
  *y2 = x2 * c + x1 * s;
}

// ---- router scores --------------------------------------------------------------------------
MOEFOLD_HOST_DEVICE float sigmoid_value(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

MOEFOLD_HOST_DEVICE float sigmoid_gradient(float ds, float s) { return ds * s * (1.0f - s); }

// Softmax backward for one element: dz = p·(dp − Σ dp·p).
MOEFOLD_HOST_DEVICE float softmax_gradient(float dp, float p, float dot_dp_p) {
  return p * (dp - dot_dp_p);
}

// ---- attention ------------------------------------------------------------------------------
// Causal masking by positions: a key is visible from a query when it is not later.
MOEFOLD_HOST_DEVICE bool key_visible(int32_t q_pos, int32_t k_pos) { return k_pos <= q_pos; }

// A row's softmax over its visible keys, kept as its log-sum-exp (the forward's statistic, from
// which the backward recomputes P): lse = max + log Σ exp(s − max) over the visible scores, −inf
// when no key is visible; then P = exp(s − lse) for a visible key and 0 for a hidden one.
MOEFOLD_HOST_DEVICE float attention_lse(float row_max, float sum_shifted) {
  return sum_shifted == 0.0f ? -INFINITY : row_max + logf(sum_shifted);
}

MOEFOLD_HOST_DEVICE float attention_probability(float score, float lse, bool visible) {
  return visible && lse != -INFINITY ? expf(score - lse) : 0.0f;
}
// Its backward for one score is softmax_gradient(dP, P, delta) with delta = rowsum(dO ⊙ O),
// which equals Σ_j P_j·dP_j.

// The keys a block of `rows` queries can see lie in [0, L): every key from L on is hidden from
// all of them (keys in any order). Causal chunks then score only that prefix.
MOEFOLD_HOST_DEVICE int64_t attention_visible_prefix(const int32_t* q_pos, int64_t rows,
                                                     const int32_t* k_pos, int64_t Skv) {
  if (rows == 0) return 0;
  int32_t latest = q_pos[0];
  for (int64_t i = 1; i < rows; ++i) latest = q_pos[i] > latest ? q_pos[i] : latest;
  int64_t prefix = Skv;
  while (prefix > 0 && !key_visible(latest, k_pos[prefix - 1])) --prefix;
  return prefix;
}

// Flash attention's running softmax of one row over key tiles: it keeps the running max m and
// the sum of exp(s − m) over the keys folded so far, and each key's weight is
// attention_probability(s, m, visible). Folding a tile whose visible max is tile_max gives the
// new max and the factor that rescales the old sum and output accumulator (0 while nothing was
// visible, so no −inf − −inf); at the end lse = attention_lse(m, sum), o = acc / sum.
struct OnlineSoftmaxStep {
  float max, rescale;
};

MOEFOLD_HOST_DEVICE OnlineSoftmaxStep online_softmax_step(float running_max, float tile_max) {
  const float m = running_max > tile_max ? running_max : tile_max;
  return {m, running_max == -INFINITY ? 0.0f : expf(running_max - m)};
}

// Merging two partial attentions of one row with log-sum-exps la and lb (ring attention): the
// merged lse and the weights of each part. Either may be −inf (that part saw no key).
struct AttentionMergeWeights {
  float lse, weight_a, weight_b;
};

MOEFOLD_HOST_DEVICE AttentionMergeWeights attention_merge_weights(float la, float lb) {
  if (lb == -INFINITY) return {la, 1.0f, 0.0f};
  if (la == -INFINITY) return {lb, 0.0f, 1.0f};
  const float m = la > lb ? la : lb;
  const float merged = m + logf(expf(la - m) + expf(lb - m));
  return {merged, expf(la - merged), expf(lb - merged)};
}

// ---- cross-entropy --------------------------------------------------------------------------
// The gradient of CE·weight for one logit, given e = exp(z − max) and scale = weight / Σ e:
// (e/Σ − [label])·weight, as e·scale − [label]·weight.
MOEFOLD_HOST_DEVICE float cross_entropy_gradient(float e, float scale, bool is_label,
                                                 float weight) {
  return e * scale - (is_label ? weight : 0.0f);
}

// Vocabulary-parallel CE of one row from the reductions over the shards: CE·mask with
// lse = log Σ exp(z − max) + max, in float64 (the sums are exchanged as float64).
MOEFOLD_HOST_DEVICE double vocab_parallel_cross_entropy(double sum, float row_max,
                                                        double label_logit, float mask) {
  return (log(sum) + row_max - label_logit) * mask;
}

// The scale of cross_entropy_gradient for a row whose shards' exponentials sum to `total`.
MOEFOLD_HOST_DEVICE float softmax_gradient_scale(float weight, float mask, double total) {
  return mask == 0.0f ? 0.0f : static_cast<float>(weight / total);
}

}  // namespace moefold
