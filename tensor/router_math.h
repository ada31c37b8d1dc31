// The MoE router's row math (MODEL.md "Router"), shared by the CPU and CUDA backends as
// row_math.h is: one token's row of E logits in, its scores, expert choice, gate weights and
// log-sum-exp out, and that row's backward. The CPU backend loops rows over these functions and
// a CUDA thread runs one row, so the CPU tests check what the GPU computes. The float operations
// are those of the former host-side router, in the same order, so results on the CPU are
// unchanged bit for bit.
//
// Row functions take plain pointers and small parameter structs and keep no arrays sized by E:
// the top-k inserts into its k-entry output lists (group-limited routing adds one score per
// group, at most kMaxRouterGroups), and the backward keeps its intermediate row in its output
// row.
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

// Inserts candidate e with score s into the best-first list (top_score, top) of `count`
// entries, kept to `capacity` (router_ranks_before's order); returns the new count.
MOEFOLD_HOST_DEVICE int32_t router_insert(float s, int32_t e, float* top_score, int32_t* top,
                                          int32_t count, int32_t capacity) {
  if (count == capacity && !router_ranks_before(s, e, top_score[capacity - 1], top[capacity - 1])) {
    return count;
  }
  int32_t i = count < capacity ? count : capacity - 1;
  for (; i > 0 && router_ranks_before(s, e, top_score[i - 1], top[i - 1]); --i) {
    top_score[i] = top_score[i - 1];
    top[i] = top[i - 1];
  }
  top_score[i] = s;
  top[i] = e;
  return count < capacity ? count + 1 : capacity;
}

// The mask of the groups the row may choose from: the group_topk best group scores (ties to the
// lower group), a group's score being the sum of its top k / group_topk selection scores, best
// first; every group when routing is not group-limited. top and top_score (k each) are scratch.
MOEFOLD_HOST_DEVICE uint64_t router_row_groups(const RouterRowConfig& c, const float* probs,
                                               const float* bias, int32_t* top,
                                               float* top_score) {
  if (c.num_groups <= 0) return ~uint64_t{0};
  const int32_t size = c.experts / c.num_groups, per_group = c.topk / c.group_topk;
  float group_score[kMaxRouterGroups];
  for (int32_t g = 0; g < c.num_groups; ++g) {
    int32_t count = 0;
    for (int32_t e = g * size; e < (g + 1) * size; ++e) {
      count = router_insert(router_select_score(probs, bias, e), e, top_score, top, count,
                            per_group);
    }
    float score = 0.0f;
    for (int32_t i = 0; i < per_group; ++i) score += top_score[i];
    group_score[g] = score;
  }
  int32_t count = 0;
  for (int32_t g = 0; g < c.num_groups; ++g) {
    count = router_insert(group_score[g], g, top_score, top, count, c.group_topk);
  }
  uint64_t chosen = 0;
  for (int32_t i = 0; i < c.group_topk; ++i) chosen |= uint64_t{1} << top[i];
  return chosen;
}

// idx (k) = the experts of the k best selection scores, best first (experts outside the chosen
// groups score −inf); top_score (k) gets their scores.
MOEFOLD_HOST_DEVICE void router_row_topk(const RouterRowConfig& c, const float* probs,
                                         const float* bias, int32_t* idx, float* top_score) {
  const uint64_t groups = router_row_groups(c, probs, bias, idx, top_score);
  const int32_t size = c.num_groups > 0 ? c.experts / c.num_groups : c.experts;
  int32_t count = 0;
  for (int32_t g = 0; g * size < c.experts; ++g) {
    const bool open = ((groups >> g) & 1u) != 0;
    for (int32_t e = g * size; e < (g + 1) * size; ++e) {
      const float s = open ? router_select_score(probs, bias, e) : -INFINITY;
      count = router_insert(s, e, top_score, idx, count, c.topk);
    }
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
  router_row_topk(c, probs, bias, idx, gates);
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

// The balance loss's d/d probs_e (router_row_backward).
struct RouterBalanceRow {
  double weight, sum_s, dot;  // dot, sum_s: the sigmoid path's Σ_f dP_f·P_f and Σ_f s_f
};

MOEFOLD_HOST_DEVICE float router_balance_gradient(bool softmax, const RouterBalanceRow& r,
                                                  const int64_t* counts, int32_t e) {
  return softmax ? static_cast<float>(r.weight * counts[e])
                 : static_cast<float>((r.weight * counts[e] - r.dot) / r.sum_s);
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
  RouterBalanceRow balance{b.balance_weight, 0.0, 0.0};
  if (b.balance && !c.softmax) {
    const float row_sum = router_score_sum(probs, E);
    for (int32_t e = 0; e < E; ++e) {
      balance.sum_s += probs[e];
      balance.dot += b.balance_weight * counts[e] * router_balance_prob(false, probs[e], row_sum);
    }
  }
  // d/d probs into dz: the gate terms of gates taken from probs, then the balance term.
  for (int32_t e = 0; e < E; ++e) dz[e] = 0.0f;
  for (int32_t j = 0; j < k && !gate_softmax; ++j) {
    const float dg = router_unscaled_dgate(c, dgates, keep, j);
    dz[idx[j]] += c.softmax || k == 1 ? dg : static_cast<float>((dg - gs.dot) / gs.sum_s);
  }
  if (b.balance) {
    for (int32_t e = 0; e < E; ++e) dz[e] += router_balance_gradient(c.softmax, balance, counts, e);
  }
  float dot_dp_p = 0.0f;  // Σ_e (d/d probs)·probs for the softmax backward
  if (c.softmax) {
    for (int32_t e = 0; e < E; ++e) dot_dp_p += dz[e] * probs[e];
  }
  // dz = (gate term) + z-loss term + the scores' backward of d/d probs, summed in that order
  // from 0 (the two-term sums below are the same sums: addition commutes).
  for (int32_t e = 0; e < E; ++e) {
    const float d = c.softmax ? softmax_gradient(dz[e], probs[e], dot_dp_p)
                              : sigmoid_gradient(dz[e], probs[e]);
    dz[e] = b.z_loss ? d : 0.0f + d;
  }
  const double z_weight = b.z_loss ? b.z_factor * lse / b.z_tokens : 0.0;
  for (int32_t e = 0; e < E && b.z_loss; ++e) {
    dz[e] = (0.0f + static_cast<float>(z_weight * expf(z[e] - lse))) + dz[e];
  }
  // Softmax gates over the chosen logits add their direct term first: the chosen experts are
  // redone in that order, with d/d probs (then only the balance term) recomputed.
  for (int32_t j = 0; j < k && gate_softmax; ++j) {
    const int32_t e = idx[j];
    const float dg = router_unscaled_dgate(c, dgates, keep, j), g = gates[j] / c.scaling_factor;
    const float dp = b.balance ? 0.0f + router_balance_gradient(true, balance, counts, e) : 0.0f;
    float d = 0.0f;
    d += static_cast<float>(g * (dg - gs.dot));
    if (b.z_loss) d += static_cast<float>(z_weight * expf(z[e] - lse));
    d += softmax_gradient(dp, probs[e], dot_dp_p);
    dz[e] = d;
  }
}

}  // namespace moefold
