#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/check.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/vec_math.h"
#include "tensor/row_math.h"

namespace moefold::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kBlockQ = 128;  // query rows per tile
constexpr int64_t kBlockK = 128;  // keys per tile

struct Dims {
  int64_t B, Sq, Skv, nh, nkv, d;
  int64_t q_row() const { return nh * d; }    // stride between tokens of q, o
  int64_t kv_row() const { return nkv * d; }  // stride between tokens of k, v
};

// Position range of one block of rows, to skip tiles that are fully masked and to avoid masking
// tiles that are fully visible.
struct Range {
  int32_t min, max;
};

std::vector<Range> block_ranges(const int32_t* pos, int64_t n, int64_t block) {
  std::vector<Range> ranges;
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t end = std::min(n, begin + block);
    const auto [lo, hi] = std::minmax_element(pos + begin, pos + end);
    ranges.push_back({*lo, *hi});
  }
  return ranges;
}

enum class Visibility { kNone, kPartial, kFull };

Visibility tile_visibility(Range q, Range k) {
  if (k.min > q.max) return Visibility::kNone;
  if (k.max <= q.min) return Visibility::kFull;
  return Visibility::kPartial;
}

// S (rows, cols) with stride ld: entries whose key comes after the query become −inf.
void apply_causal_mask(float* S, int64_t ld, const int32_t* q_pos, int64_t rows,
                       const int32_t* k_pos, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      if (!key_visible(q_pos[i], k_pos[j])) S[i * ld + j] = kNegInf;
    }
  }
}

// dS = P ⊙ (dP − delta) for one row, written over dP.
MOEFOLD_ISA_CLONES
void softmax_backward_row(float* dp, const float* p, float delta, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dp[j] = softmax_gradient(dp[j], p[j], delta);
}

void check_dims(const Dims& dims) {
  MOEFOLD_CHECK(dims.nkv > 0 && dims.nh % dims.nkv == 0,
                "heads " << dims.nh << " not divisible by kv heads " << dims.nkv);
  MOEFOLD_CHECK(dims.d > 0);
}

}  // namespace

void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse,
                       const int32_t* q_pos_Sq, const int32_t* k_pos_Skv, int64_t B, int64_t Sq,
                       int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  const Dims dims{B, Sq, Skv, nh, nkv, d};
  check_dims(dims);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t group = nh / nkv;
  const std::vector<Range> q_ranges = block_ranges(q_pos_Sq, Sq, kBlockQ);
  const std::vector<Range> k_ranges = block_ranges(k_pos_Skv, Skv, kBlockK);
  std::vector<float> S(kBlockQ * kBlockK), acc(kBlockQ * d), row_max(kBlockQ), row_sum(kBlockQ);

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      const float* k_bh = k + b * Skv * dims.kv_row() + (h / group) * d;
      const float* v_bh = v + b * Skv * dims.kv_row() + (h / group) * d;
      for (int64_t qb = 0; qb * kBlockQ < Sq; ++qb) {
        const int64_t q0 = qb * kBlockQ, rows = std::min(kBlockQ, Sq - q0);
        const float* q_tile = q + (b * Sq + q0) * dims.q_row() + h * d;
        std::fill(acc.begin(), acc.end(), 0.0f);
        std::fill(row_max.begin(), row_max.end(), kNegInf);
        std::fill(row_sum.begin(), row_sum.end(), 0.0f);
        for (int64_t kb = 0; kb * kBlockK < Skv; ++kb) {
          const Visibility vis = tile_visibility(q_ranges[qb], k_ranges[kb]);
          if (vis == Visibility::kNone) continue;
          const int64_t k0 = kb * kBlockK, cols = std::min(kBlockK, Skv - k0);
          gemm(false, true, rows, cols, d, scale, q_tile, dims.q_row(), k_bh + k0 * dims.kv_row(),
               dims.kv_row(), 0.0f, S.data(), kBlockK);
          if (vis == Visibility::kPartial) {
            apply_causal_mask(S.data(), kBlockK, q_pos_Sq + q0, rows, k_pos_Skv + k0, cols);
          }
          // Online softmax: rescale what was accumulated under the old running max.
          for (int64_t i = 0; i < rows; ++i) {
            float* s = S.data() + i * kBlockK;
            const float new_max = std::max(row_max[i], max_value(s, cols));
            if (new_max == kNegInf) {  // nothing visible yet in this row
              std::fill(s, s + cols, 0.0f);
              continue;
            }
            const float correction = exp_approx(row_max[i] - new_max);
            row_sum[i] = row_sum[i] * correction + exp_shifted_sum(s, new_max, s, cols);
            row_max[i] = new_max;
            if (correction != 1.0f) scale_in_place(acc.data() + i * d, correction, d);
          }
          gemm(false, false, rows, d, cols, 1.0f, S.data(), kBlockK, v_bh + k0 * dims.kv_row(),
               dims.kv_row(), 1.0f, acc.data(), d);
        }
        for (int64_t i = 0; i < rows; ++i) {
          float* o_row = o + (b * Sq + q0 + i) * dims.q_row() + h * d;
          float* lse_row = lse + (b * nh + h) * Sq + q0 + i;
          if (row_sum[i] == 0.0f) {
            std::fill(o_row, o_row + d, 0.0f);
            *lse_row = kNegInf;
            continue;
          }
          const float inv = 1.0f / row_sum[i];
          for (int64_t c = 0; c < d; ++c) o_row[c] = acc[i * d + c] * inv;
          *lse_row = row_max[i] + std::log(row_sum[i]);
        }
      }
    }
  }
}

// Flash-attention backward, recomputing P = exp(S − lse) per tile:
// dV += Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O)), dQ += scale·dS K, dK += scale·dSᵀ Q.
void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, float* dq, float* dk, float* dv,
                        const int32_t* q_pos_Sq, const int32_t* k_pos_Skv, int64_t B, int64_t Sq,
                        int64_t Skv, int64_t nh, int64_t nkv, int64_t d) {
  const Dims dims{B, Sq, Skv, nh, nkv, d};
  check_dims(dims);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t group = nh / nkv;
  const std::vector<Range> q_ranges = block_ranges(q_pos_Sq, Sq, kBlockQ);
  const std::vector<Range> k_ranges = block_ranges(k_pos_Skv, Skv, kBlockK);
  std::vector<float> P(kBlockQ * kBlockK), dP(kBlockQ * kBlockK), delta(kBlockQ);

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kv_offset = b * Skv * dims.kv_row() + (h / group) * d;
      for (int64_t qb = 0; qb * kBlockQ < Sq; ++qb) {
        const int64_t q0 = qb * kBlockQ, rows = std::min(kBlockQ, Sq - q0);
        const int64_t q_offset = (b * Sq + q0) * dims.q_row() + h * d;
        const float* lse_tile = lse + (b * nh + h) * Sq + q0;
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t at = q_offset + i * dims.q_row();
          delta[i] = dot(dout + at, o + at, d);
        }
        for (int64_t kb = 0; kb * kBlockK < Skv; ++kb) {
          const Visibility vis = tile_visibility(q_ranges[qb], k_ranges[kb]);
          if (vis == Visibility::kNone) continue;
          const int64_t k0 = kb * kBlockK, cols = std::min(kBlockK, Skv - k0);
          const int64_t kv_tile = kv_offset + k0 * dims.kv_row();
          gemm(false, true, rows, cols, d, scale, q + q_offset, dims.q_row(), k + kv_tile,
               dims.kv_row(), 0.0f, P.data(), kBlockK);
          if (vis == Visibility::kPartial) {
            apply_causal_mask(P.data(), kBlockK, q_pos_Sq + q0, rows, k_pos_Skv + k0, cols);
          }
          for (int64_t i = 0; i < rows; ++i) {
            float* p = P.data() + i * kBlockK;
            if (lse_tile[i] == kNegInf) {
              std::fill(p, p + cols, 0.0f);
            } else {
              exp_shifted_sum(p, lse_tile[i], p, cols);
            }
          }
          gemm(true, false, cols, d, rows, 1.0f, P.data(), kBlockK, dout + q_offset,
               dims.q_row(), 1.0f, dv + kv_tile, dims.kv_row());
          gemm(false, true, rows, cols, d, 1.0f, dout + q_offset, dims.q_row(), v + kv_tile,
               dims.kv_row(), 0.0f, dP.data(), kBlockK);
          for (int64_t i = 0; i < rows; ++i) {
            softmax_backward_row(dP.data() + i * kBlockK, P.data() + i * kBlockK, delta[i], cols);
          }
          gemm(false, false, rows, d, cols, scale, dP.data(), kBlockK, k + kv_tile, dims.kv_row(),
               1.0f, dq + q_offset, dims.q_row());
          gemm(true, false, cols, d, rows, scale, dP.data(), kBlockK, q + q_offset, dims.q_row(),
               1.0f, dk + kv_tile, dims.kv_row());
        }
      }
    }
  }
}

void attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b, int64_t B,
                     int64_t Sq, int64_t nh, int64_t d) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t s = 0; s < Sq; ++s) {
        const int64_t l = (b * nh + h) * Sq + s;
        const float la = lse_a[l], lb = lse_b[l];
        if (lb == kNegInf) continue;
        float* oa = o_a + ((b * Sq + s) * nh + h) * d;
        const float* ob = o_b + ((b * Sq + s) * nh + h) * d;
        if (la == kNegInf) {
          std::copy(ob, ob + d, oa);
          lse_a[l] = lb;
          continue;
        }
        const AttentionMergeWeights m = attention_merge_weights(la, lb);
        for (int64_t c = 0; c < d; ++c) oa[c] = m.weight_a * oa[c] + m.weight_b * ob[c];
        lse_a[l] = m.lse;
      }
    }
  }
}

}  // namespace moefold::cpu
