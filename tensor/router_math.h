// The MoE router's row math (MODEL.md "Router"), shared by the CPU and CUDA backends as
// row_math.h is: one token's row of E logits in, its scores, expert choice, gate weights and
// log-sum-exp out, and that row's backward. The CPU backend loops rows over these functions and
// a CUDA thread runs one row, so the CPU tests check what the GPU computes. The float operations
// are those of the former host-side router, in the same order, so results on the CPU are
// unchanged bit for bit.
//
// Row functions take plain pointers and small parameter structs and keep no arrays sized by E:
// the top-k recomputes each candidate's score instead of sorting a copy, and the backward keeps
// its intermediate row in its output row.
#pragma once

#include <math.h>

#include <cstdint>

#include "tensor/kernel_math.h"
#include "tensor/row_math.h"

namespace moefold {

// Group-limited routing keeps its chosen groups in a 64-bit mask.
constexpr int32_t kMaxRouterGroups = 64;

struct RouterRowConfig {
  int32_t experts = 0;     // E
  int32_t topk = 1;        // k
  bool softmax = true;     // scores: softmax(z), else σ(z)
  bool pre_softmax = false;  // softmax scores: gates are probs[idx] (else softmax of z[idx])
  int32_t num_groups = 0;  // group-limited routing: E split into this many groups (0 = off)
  int32_t group_topk = 0;  // ... of which the best group_topk are kept
  float scaling_factor = 1.0f;  // gates ×
};

// The backward's loss terms for one row, with the weights the host computes once per layer.
struct RouterBackwardConfig {
  RouterRowConfig row;
  bool balance = false;         // balance loss: d/dP_e = balance_weight · c_e of the row's group
  double balance_weight = 0.0;  // scale · coeff · E / (k · T²) / (B for seq_aux_loss, else 1)
  bool z_loss = false;          // z-loss: dz_e += z_factor · lse / z_tokens · exp(z_e − lse)
  double z_factor = 0.0;        // scale · z_coeff · 2
  double z_tokens = 1.0;        // N, the micro-batch's tokens
};

// Strict order of the top-k: higher score first, equal scores by lower index (-inf last).
MOEFOLD_HOST_DEVICE bool router_ranks_before(float score_a, int32_t a, float score_b, int32_t b) {
  return score_a > score_b || (score_a == score_b && a < b);
}

// ---- forward --------------------------------------------------------------------------------
// probs (E) = softmax(z) or σ(z).
MOEFOLD_HOST_DEVICE void router_row_scores(const RouterRowConfig& c, const float* z, float* probs) {
  const int32_t E = c.experts;
  if (!c.softmax) {
    for (int32_t e = 0; e < E; ++e) probs[e] = sigmoid_value(z[e]);
    return;
  }
  float max = z[0];
  for (int32_t e = 1; e < E; ++e) max = max < z[e] ? z[e] : max;
  float sum = 0.0f;
  for (int32_t e = 0; e < E; ++e) {
    probs[e] = expf(z[e] - max);
    sum += probs[e];
  }
  const float inv = 1.0f / sum;
  for (int32_t e = 0; e < E; ++e) probs[e] *= inv;
}

// The score that chooses expert e: its probability plus its bias (bias may be null).
MOEFOLD_HOST_DEVICE float router_select_score(const float* probs, const float* bias, int32_t e) {
  return probs[e] + (bias != nullptr ? bias[e] : 0.0f);
}

// The best of scores[first, first + count) (selection scores) ranking strictly after
// (prev_score, prev) in router_ranks_before's order (prev < 0: the best of all); −1 when none.
// Candidates outside `group_mask`'s groups of size group_size score −inf.
MOEFOLD_HOST_DEVICE int32_t router_next_best(const float* probs, const float* bias, int32_t first,
                                             int32_t count, uint64_t group_mask,
                                             int32_t group_size, int32_t prev, float prev_score,
                                             float* best_score) {
  int32_t best = -1;
  float top = 0.0f;
  for (int32_t e = first; e < first + count; ++e) {
    const bool open = ((group_mask >> (e / group_size)) & 1u) != 0;
    const float s = open ? router_select_score(probs, bias, e) : -INFINITY;
    if (prev >= 0 && !router_ranks_before(prev_score, prev, s, e)) continue;
    if (best < 0 || router_ranks_before(s, e, top, best)) {
      best = e;
      top = s;
    }
  }
  *best_score = top;
  return best;
}

// A group's score: the sum of its top k / group_topk selection scores, best first.
MOEFOLD_HOST_DEVICE float router_group_score(const RouterRowConfig& c, const float* probs,
                                             const float* bias, int32_t group) {
  const int32_t size = c.experts / c.num_groups, per_group = c.topk / c.group_topk;
  float score = 0.0f, value = 0.0f;
  int32_t prev = -1;
  for (int32_t i = 0; i < per_group; ++i) {
    prev = router_next_best(probs, bias, group * size, size, ~uint64_t{0}, size, prev, value,
                            &value);
    score += value;
  }
  return score;
}

// The mask of the groups the row may choose from: the group_topk best group scores (ties to the
// lower group), or every group when routing is not group-limited.
MOEFOLD_HOST_DEVICE uint64_t router_row_groups(const RouterRowConfig& c, const float* probs,
                                               const float* bias) {
  if (c.num_groups <= 0) return ~uint64_t{0};
  uint64_t chosen = 0;
  int32_t prev = -1;
  float prev_score = 0.0f;
  for (int32_t i = 0; i < c.group_topk; ++i) {
    int32_t best = -1;
    float top = 0.0f;
    for (int32_t g = 0; g < c.num_groups; ++g) {
      const float s = router_group_score(c, probs, bias, g);
      if (prev >= 0 && !router_ranks_before(prev_score, prev, s, g)) continue;
      if (best < 0 || router_ranks_before(s, g, top, best)) {
        best = g;
        top = s;
      }
    }
    chosen |= uint64_t{1} << best;
    prev = best;
    prev_score = top;
  }
  return chosen;
}

// idx (k) = the experts of the k best selection scores, best first.
MOEFOLD_HOST_DEVICE void router_row_topk(const RouterRowConfig& c, const float* probs,
                                         const float* bias, int32_t* idx) {
  const uint64_t groups = router_row_groups(c, probs, bias);
  const int32_t group_size = c.num_groups > 0 ? c.experts / c.num_groups : c.experts;
  int32_t prev = -1;
  float score = 0.0f;
  for (int32_t j = 0; j < c.topk; ++j) {
    prev = router_next_best(probs, bias, 0, c.experts, groups, group_size, prev, score, &score);
    idx[j] = prev;
  }
}

// gates (k): softmax of the chosen logits (softmax scores, post-top-k), the chosen probabilities
// (pre-softmax), or the chosen sigmoid scores normalised to sum 1 when k > 1; times the scaling
// factor.
MOEFOLD_HOST_DEVICE void router_row_gates(const RouterRowConfig& c, const float* z,
                                          const float* probs, const int32_t* idx, float* gates) {
  const int32_t k = c.topk;
  if (c.softmax && !c.pre_softmax) {
    float max = -INFINITY;
    for (int32_t j = 0; j < k; ++j) max = max < z[idx[j]] ? z[idx[j]] : max;
    float sum = 0.0f;
    for (int32_t j = 0; j < k; ++j) sum += gates[j] = expf(z[idx[j]] - max);
    for (int32_t j = 0; j < k; ++j) gates[j] /= sum;
  } else {
    float sum = 0.0f;
    for (int32_t j = 0; j < k; ++j) sum += gates[j] = probs[idx[j]];
    if (!c.softmax && k > 1) {
      for (int32_t j = 0; j < k; ++j) gates[j] /= sum;
    }
  }
  for (int32_t j = 0; j < k; ++j) gates[j] *= c.scaling_factor;
}

// log Σ_e exp(z_e) (stable; −inf for a row of −inf).
MOEFOLD_HOST_DEVICE float router_row_lse(const float* z, int32_t E) {
  float max = z[0];
  for (int32_t e = 1; e < E; ++e) max = max < z[e] ? z[e] : max;
  if (max == -INFINITY) return max;
  float sum = 0.0f;
  for (int32_t e = 0; e < E; ++e) sum += expf(z[e] - max);
  return max + logf(sum);
}

// The forward of one row after its scores: idx (k), gates (k) and, when lse is not null, *lse.
MOEFOLD_HOST_DEVICE void router_row_choose(const RouterRowConfig& c, const float* z,
                                           const float* bias, const float* probs, int32_t* idx,
                                           float* gates, float* lse) {
  router_row_topk(c, probs, bias, idx);
  router_row_gates(c, z, probs, idx, gates);
  if (lse != nullptr) *lse = router_row_lse(z, c.experts);
}

// The whole forward of one row: probs (E), then router_row_choose.
MOEFOLD_HOST_DEVICE void router_row_forward(const RouterRowConfig& c, const float* z,
                                            const float* bias, float* probs, int32_t* idx,
                                            float* gates, float* lse) {
  router_row_scores(c, z, probs);
  router_row_choose(c, z, bias, probs, idx, gates, lse);
}

// ---- balance statistics ---------------------------------------------------------------------
// The balance loss's P[t,e]: softmax probabilities as they are, sigmoid scores divided by their
// row's sum (router_score_sum).
MOEFOLD_HOST_DEVICE float router_score_sum(const float* probs, int32_t E) {
  float sum = 0.0f;
  for (int32_t e = 0; e < E; ++e) sum += probs[e];
  return sum;
}

MOEFOLD_HOST_DEVICE float router_balance_prob(bool softmax, float prob, float row_sum) {
  return softmax ? prob : prob / row_sum;
}

// ---- backward -------------------------------------------------------------------------------
// The gate terms of one row: dot = Σ_j dĝ_j·ĝ_j and sum_s = Σ_j probs[idx_j], with ĝ = g / sf
// and dĝ = dg·sf (0 for a dropped assignment).
struct RouterGateSums {
  double dot, sum_s;
};

MOEFOLD_HOST_DEVICE float router_unscaled_dgate(const RouterRowConfig& c, const float* dgates,
                                                const uint8_t* keep, int32_t j) {
  return keep == nullptr || keep[j] ? dgates[j] * c.scaling_factor : 0.0f;
}

MOEFOLD_HOST_DEVICE RouterGateSums router_gate_sums(const RouterRowConfig& c, const float* dgates,
                                                    const uint8_t* keep, const float* gates,
                                                    const float* probs, const int32_t* idx) {
  RouterGateSums s{0.0, 0.0};
  for (int32_t j = 0; j < c.topk; ++j) {
    const float dg = router_unscaled_dgate(c, dgates, keep, j), g = gates[j] / c.scaling_factor;
    s.dot += static_cast<double>(dg) * g;
    s.sum_s += probs[idx[j]];
  }
  return s;
}

// d/dz_e of one row: dgates (k) is d loss / d g (entries of dropped assignments, keep_j = 0, are
// ignored; keep may be null: all kept); counts (E) the balance loss's token counts of the row's
// group (read only with balance); lse read only with the z-loss. dz (E) is overwritten (it first
// holds d/d probs).
MOEFOLD_HOST_DEVICE void router_row_backward(const RouterBackwardConfig& b, const float* dgates,
                                             const uint8_t* keep, const float* gates,
                                             const float* probs, const float* z,
                                             const int32_t* idx, float lse, const int64_t* counts,
                                             float* dz) {
  const RouterRowConfig& c = b.row;
  const int32_t E = c.experts, k = c.topk;
  const bool gate_softmax = c.softmax && !c.pre_softmax;  // g = softmax(z[idx]): into dz
  const RouterGateSums gs = router_gate_sums(c, dgates, keep, gates, probs, idx);
  // Sigmoid balance loss through P = s / Σ s: d/ds_e = (dP_e − Σ_f dP_f·P_f) / Σ s.
  float row_sum = 0.0f;
  double balance_sum_s = 0.0, balance_dot = 0.0;
  if (b.balance && !c.softmax) {
    row_sum = router_score_sum(probs, E);
    for (int32_t e = 0; e < E; ++e) {
      balance_sum_s += probs[e];
      balance_dot += b.balance_weight * counts[e] * router_balance_prob(false, probs[e], row_sum);
    }
  }
  // d/d probs into dz, and Σ_e (d/d probs)·probs for the softmax backward.
  float dot_dp_p = 0.0f;
  for (int32_t e = 0; e < E; ++e) {
    float dp = 0.0f;
    for (int32_t j = 0; j < k && !gate_softmax; ++j) {
      if (idx[j] != e) continue;
      const float dg = router_unscaled_dgate(c, dgates, keep, j);
      dp += c.softmax || k == 1 ? dg : static_cast<float>((dg - gs.dot) / gs.sum_s);
    }
    if (b.balance) {
      dp += c.softmax ? static_cast<float>(b.balance_weight * counts[e])
                      : static_cast<float>((b.balance_weight * counts[e] - balance_dot) /
                                           balance_sum_s);
    }
    dz[e] = dp;
    if (c.softmax) dot_dp_p += dp * probs[e];
  }
  const double z_weight = b.z_loss ? b.z_factor * lse / b.z_tokens : 0.0;
  for (int32_t e = 0; e < E; ++e) {
    float d = 0.0f;
    for (int32_t j = 0; j < k && gate_softmax; ++j) {
      if (idx[j] != e) continue;
      const float dg = router_unscaled_dgate(c, dgates, keep, j), g = gates[j] / c.scaling_factor;
      d += static_cast<float>(g * (dg - gs.dot));
    }
    if (b.z_loss) d += static_cast<float>(z_weight * expf(z[e] - lse));
    d += c.softmax ? softmax_gradient(dz[e], probs[e], dot_dp_p) : sigmoid_gradient(dz[e], probs[e]);
    dz[e] = d;
  }
}

}  // namespace moefold
