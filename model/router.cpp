#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

Router::Router(const ModelConfig& config, const ParallelContext& ctx, int layer,
               ParameterRegistry& registry)
    : ctx_(ctx),
      moe_(config.moe),
      hidden_(config.hidden_size),
      experts_(config.moe.num_experts),
      topk_(config.moe.moe_router_topk) {
  MOEFOLD_CHECK(topk_ >= 1 && topk_ <= experts_);
  const std::string prefix = "layers/" + std::to_string(layer) + "/moe/";
  weight_ = registry.add_weight(shard_layout(prefix + "router", {experts_, hidden_}, ctx.coords),
                                config.init_method_std);
  weight_->float32_compute = true;  // MODEL.md: the router's GEMM and logits stay float32
  if (moe_.moe_router_enable_expert_bias) {
    MOEFOLD_CHECK(moe_.moe_router_score_function == RouterScoreFunction::kSigmoid,
                  "expert bias needs sigmoid scores");
    expert_bias_ = registry.add_buffer(shard_layout(prefix + "expert_bias", {experts_}, ctx.coords),
                                       InitKind::kZeros);
  }
  if (moe_.moe_router_num_groups > 0) {
    MOEFOLD_CHECK(experts_ % moe_.moe_router_num_groups == 0 && moe_.moe_router_group_topk > 0 &&
                  moe_.moe_router_group_topk <= moe_.moe_router_num_groups &&
                  topk_ % moe_.moe_router_group_topk == 0);
  }
}

void update_expert_bias(const std::vector<int64_t>& counts_E, float rate, float* bias_E) {
  const int64_t E = static_cast<int64_t>(counts_E.size());
  int64_t total = 0;
  for (int64_t c : counts_E) total += c;
  // sign(c̄ − c_e) = sign(total − E·c_e), exact in integers.
  for (int64_t e = 0; e < E; ++e) {
    const int64_t diff = total - E * counts_E[e];
    bias_E[e] += rate * static_cast<float>((diff > 0) - (diff < 0));
  }
}

static float scaling_factor(const MoeConfig& moe) {
  return moe.moe_router_topk_scaling_factor != 0.0f ? moe.moe_router_topk_scaling_factor : 1.0f;
}

void Router::forward(const Tensor& x_NH, int64_t batch, int64_t seq, RouterStash& st) const {
  std::vector<int64_t> tokens(batch * seq);
  std::iota(tokens.begin(), tokens.end(), int64_t{0});
  forward(x_NH, batch, seq, std::move(tokens), st);
}

void Router::forward(const Tensor& x_nH, int64_t batch, int64_t seq, std::vector<int64_t> tokens,
                     RouterStash& st) const {
  const int64_t n = x_nH.numel() / hidden_, N = batch * seq, E = experts_, k = topk_;
  MOEFOLD_CHECK(x_nH.numel() == n * hidden_ && static_cast<int64_t>(tokens.size()) == n);
  for (int64_t t : tokens) MOEFOLD_CHECK(t >= 0 && t < N, "token " << t << " of " << N);
  st.batch = batch;
  st.seq = seq;
  st.tokens = std::move(tokens);
  st.rows = n;
  st.x = x_nH;
  ensure_shape(st.device_logits, {n, E}, DType::kFloat32, x_nH.device());
  ensure_shape(st.probs, {n, E}, DType::kFloat32, Device::kCpu);
  ensure_shape(st.gates, {n, k}, DType::kFloat32, Device::kCpu);
  ops::linear_forward(x_nH, weight_->value, st.device_logits);
  st.logits = ops::to_host(st.device_logits);
  if (moe_.moe_router_score_function == RouterScoreFunction::kSoftmax) {
    ops::softmax_rows_forward(st.logits, st.probs);
  } else {
    ops::sigmoid_forward(st.logits, st.probs);
  }
  choose_experts(n, st);
  compute_gates(n, st);
  st.device_gates = ops::to_device(st.gates, x_nH.device());
  // Counts of this rank's rows, then of the whole micro-batch (one reduction over tp_cp).
  st.counts.assign(E, 0);
  std::vector<int64_t> totals(E + batch * E, 0);  // (E) then (B,E) per sequence
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = st.idx[t * k + j];
      ++st.counts[e];
      ++totals[E + (st.tokens[t] / seq) * E + e];
    }
  }
  std::copy(st.counts.begin(), st.counts.end(), totals.begin());
  ctx_.tp_cp->all_reduce(std::span<int64_t>(totals));
  st.total_counts.assign(totals.begin(), totals.begin() + E);
  st.total_seq_counts.assign(totals.begin() + E, totals.end());
  MOEFOLD_CHECK(std::accumulate(st.total_counts.begin(), st.total_counts.end(), int64_t{0}) ==
                    N * k,
                "the micro-batch's rows must be split over tp_cp without overlap");
  apply_capacity(st);
  compute_losses(st);
}

// r = probs (+ expert bias); group-limited routing masks r outside the best groups; idx = topk(r).
void Router::choose_experts(int64_t N, RouterStash& st) const {
  const int64_t E = experts_;
  const float* r = st.probs.data();
  const bool biased = expert_bias_ != nullptr;
  const int G = moe_.moe_router_num_groups;
  if (biased || G > 0) {
    float* sel = ensure_shape(st.select, {N, E}, DType::kFloat32, Device::kCpu).data();
    const float* probs = st.probs.data();
    const Tensor bias = biased ? ops::to_host(expert_bias_->value) : Tensor();
    for (int64_t t = 0; t < N; ++t) {
      for (int64_t e = 0; e < E; ++e) {
        sel[t * E + e] = probs[t * E + e] + (biased ? bias.data()[e] : 0.0f);
      }
    }
    if (G > 0) {
      const int64_t group_size = E / G, per_group = topk_ / moe_.moe_router_group_topk;
      const int64_t gk = moe_.moe_router_group_topk;
      std::vector<int32_t> top_idx(N * G * per_group), group_idx(N * gk);
      std::vector<float> top_val(N * G * per_group), group_score(N * G, 0.0f);
      ops::topk_rows(sel, N * G, group_size, per_group, top_idx.data(), top_val.data());
      for (int64_t row = 0; row < N * G; ++row) {
        for (int64_t i = 0; i < per_group; ++i) group_score[row] += top_val[row * per_group + i];
      }
      ops::topk_rows(group_score.data(), N, G, gk, group_idx.data(), nullptr);
      std::vector<uint8_t> chosen(G);
      for (int64_t t = 0; t < N; ++t) {
        std::fill(chosen.begin(), chosen.end(), 0);
        for (int64_t i = 0; i < gk; ++i) chosen[group_idx[t * gk + i]] = 1;
        for (int64_t e = 0; e < E; ++e) {
          if (!chosen[e / group_size]) sel[t * E + e] = -std::numeric_limits<float>::infinity();
        }
      }
    }
    r = sel;
  }
  ops::topk_rows(r, N, E, topk_, ensure_size(st.idx, N * topk_), nullptr);
}

void Router::compute_gates(int64_t N, RouterStash& st) const {
  const int64_t E = experts_, k = topk_;
  const float* z = st.logits.data();
  const float* p = st.probs.data();
  float* g = st.gates.data();
  const bool softmax = moe_.moe_router_score_function == RouterScoreFunction::kSoftmax;
  for (int64_t t = 0; t < N; ++t) {
    const int32_t* idx = st.idx.data() + t * k;
    float* gt = g + t * k;
    if (softmax && !moe_.moe_router_pre_softmax) {
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < k; ++j) mx = std::max(mx, z[t * E + idx[j]]);
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) sum += gt[j] = std::exp(z[t * E + idx[j]] - mx);
      for (int64_t j = 0; j < k; ++j) gt[j] /= sum;
    } else {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) sum += gt[j] = p[t * E + idx[j]];
      if (!softmax && k > 1) {
        for (int64_t j = 0; j < k; ++j) gt[j] /= sum;
      }
    }
    const float scale = scaling_factor(moe_);
    for (int64_t j = 0; j < k; ++j) gt[j] *= scale;
  }
}

// MODEL.md capacity: cap = ceil(N·k/E·cf) per expert over the whole micro-batch, assignments
// taken in token order (by gate first under the probs policy). When the micro-batch's tokens are
// split over tp_cp, every rank gathers all choices, gates and token indices, decides for all of
// them (the one-process decision) and keeps its own rows' part.
void Router::apply_capacity(RouterStash& st) const {
  const int64_t k = topk_, E = experts_, n = st.rows, N = st.batch * st.seq;
  st.keep.assign(n * k, 1);
  st.dropped = 0;
  const double cf = moe_.moe_expert_capacity_factor;
  if (cf <= 0.0) return;
  const int64_t cap = static_cast<int64_t>(std::ceil(static_cast<double>(N) * k / E * cf));
  Communicator& group = *ctx_.tp_cp;
  std::vector<int32_t> idx(N * k);
  std::vector<float> gates(N * k);
  std::vector<int64_t> tokens(N);
  const std::vector<int64_t> rows = group.all_gather_counts(n);
  std::vector<int64_t> assignments(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) assignments[r] = rows[r] * k;
  group.all_gather_v(st.tokens.data(), n, tokens.data(), rows, CommDType::kInt64);
  group.all_gather_v(st.idx.data(), n * k, idx.data(), assignments, CommDType::kInt32);
  group.all_gather_v(st.gates.data(), n * k, gates.data(), assignments, CommDType::kFloat32);
  std::vector<int64_t> gathered_row(N, -1);  // token b·S + s → its row in the gathered arrays
  for (int64_t row = 0; row < N; ++row) {
    MOEFOLD_CHECK(gathered_row[tokens[row]] < 0, "token " << tokens[row] << " routed twice");
    gathered_row[tokens[row]] = row;
  }
  std::vector<std::vector<int32_t>> by_expert(E);  // gathered assignments row·k+j, token order
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int64_t a = gathered_row[t] * k + j;
      by_expert[idx[a]].push_back(static_cast<int32_t>(a));
    }
  }
  const float* g = gates.data();
  const int64_t own_begin =
      std::accumulate(assignments.begin(), assignments.begin() + group.rank(), int64_t{0});
  const int64_t own_end = own_begin + n * k;
  for (auto& list : by_expert) {
    if (static_cast<int64_t>(list.size()) <= cap) continue;
    if (moe_.moe_token_drop_policy == TokenDropPolicy::kProbs) {
      // Highest gate first; equal gates keep token order (stable sort).
      std::stable_sort(list.begin(), list.end(), [g](int32_t a, int32_t b) { return g[a] > g[b]; });
    }
    for (size_t i = cap; i < list.size(); ++i) {
      if (list[i] < own_begin || list[i] >= own_end) continue;
      st.keep[list[i] - own_begin] = 0;
      ++st.dropped;
    }
  }
}

// P[t,e]: softmax(z) for softmax scores, s / Σ_e s for sigmoid scores.
static void balance_probs_row(bool softmax, const float* probs_E, int64_t E, float* out_E) {
  float sum = 0.0f;
  if (!softmax) {
    for (int64_t e = 0; e < E; ++e) sum += probs_E[e];
  }
  for (int64_t e = 0; e < E; ++e) out_E[e] = softmax ? probs_E[e] : probs_E[e] / sum;
}

void Router::compute_losses(RouterStash& st) const {
  const int64_t n = st.rows, N = st.batch * st.seq, E = experts_, S = st.seq;
  const bool softmax = moe_.moe_router_score_function == RouterScoreFunction::kSoftmax;
  st.aux_loss = 0.0;
  st.z_loss = 0.0;
  const double coeff = moe_.moe_aux_loss_coeff;
  const auto type = moe_.moe_router_load_balancing_type;
  const bool balance = coeff != 0.0 && type != LoadBalancingType::kNone;
  const bool per_seq = type == LoadBalancingType::kSeqAuxLoss;
  const bool z = moe_.moe_z_loss_coeff != 0.0f;
  if (!balance && !z) return;
  // Σ_t P[t,e] (per sequence for seq_aux_loss), then Σ_t lse², summed over tp_cp at once.
  const int64_t groups = balance ? (per_seq ? st.batch * E : E) : 0;
  std::vector<double> sums(groups + 1, 0.0);
  if (balance) {
    std::vector<float> row(E);
    for (int64_t t = 0; t < n; ++t) {
      balance_probs_row(softmax, st.probs.data() + t * E, E, row.data());
      double* sum = sums.data() + (per_seq ? (st.tokens[t] / S) * E : 0);
      for (int64_t e = 0; e < E; ++e) sum[e] += row[e];
    }
  }
  if (z) {
    const float* lse = ensure_shape(st.lse, {n}, DType::kFloat32, Device::kCpu).data();
    ops::logsumexp_rows(st.logits, st.lse);
    for (int64_t t = 0; t < n; ++t) sums[groups] += static_cast<double>(lse[t]) * lse[t];
  }
  ctx_.tp_cp->all_reduce(std::span<double>(sums));
  if (balance) {
    const std::vector<int64_t>& counts = per_seq ? st.total_seq_counts : st.total_counts;
    const double tokens = per_seq ? S : N;
    double total = 0.0;
    for (int64_t i = 0; i < groups; ++i) total += sums[i] * counts[i];
    st.aux_loss = coeff * E / (topk_ * tokens * tokens) * total / (per_seq ? st.batch : 1);
  }
  if (z) st.z_loss = moe_.moe_z_loss_coeff * sums[groups] / N;
}

void Router::loss_gradients(double scale, RouterStash& st, float* dscore, float* dz) const {
  const int64_t n = st.rows, N = st.batch * st.seq, E = experts_, S = st.seq;
  const bool softmax = moe_.moe_router_score_function == RouterScoreFunction::kSoftmax;
  const double coeff = moe_.moe_aux_loss_coeff;
  const auto type = moe_.moe_router_load_balancing_type;
  if (coeff != 0.0 && type != LoadBalancingType::kNone) {
    const bool per_seq = type == LoadBalancingType::kSeqAuxLoss;
    const double tokens = per_seq ? S : N;
    const double w = scale * coeff * E / (topk_ * tokens * tokens) / (per_seq ? st.batch : 1);
    std::vector<float> row(E);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t* c = per_seq ? st.total_seq_counts.data() + (st.tokens[t] / S) * E
                                 : st.total_counts.data();
      const float* p = st.probs.data() + t * E;
      float* ds = dscore + t * E;
      if (softmax) {  // d/dP = d/d probs
        for (int64_t e = 0; e < E; ++e) ds[e] += static_cast<float>(w * c[e]);
        continue;
      }
      // P = s / Σ s:  d/ds_e = (dP_e − Σ_f dP_f P_f) / Σ s.
      balance_probs_row(false, p, E, row.data());
      double sum_s = 0.0, dot = 0.0;
      for (int64_t e = 0; e < E; ++e) {
        sum_s += p[e];
        dot += w * c[e] * row[e];
      }
      for (int64_t e = 0; e < E; ++e) ds[e] += static_cast<float>((w * c[e] - dot) / sum_s);
    }
  }
  if (moe_.moe_z_loss_coeff != 0.0f) {
    const float* z = st.logits.data();
    for (int64_t t = 0; t < n; ++t) {
      const float lse = st.lse.data()[t];
      const double w = scale * moe_.moe_z_loss_coeff * 2.0 * lse / N;
      for (int64_t e = 0; e < E; ++e) {
        dz[t * E + e] += static_cast<float>(w * std::exp(z[t * E + e] - lse));
      }
    }
  }
}

void Router::backward_dx(const Tensor& dgates_NK, double aux_scale, Tensor& dx_NH, bool accumulate,
                         RouterStash& st) const {
  const int64_t n = st.rows, E = experts_, k = topk_;
  MOEFOLD_CHECK(dgates_NK.numel() == n * k && dx_NH.numel() == n * hidden_);
  float* dz = ensure_shape(st.dlogits, {n, E}, DType::kFloat32, Device::kCpu).data();
  // d/d probs; select is free now.
  float* dscore = ensure_shape(st.select, {n, E}, DType::kFloat32, Device::kCpu).data();
  st.dlogits.zero();
  st.select.zero();
  const bool softmax = moe_.moe_router_score_function == RouterScoreFunction::kSoftmax;
  const float sf = scaling_factor(moe_);
  const Tensor dgates = ops::to_host(dgates_NK);
  const float* dg = dgates.data();
  const float* g = st.gates.data();
  const float* p = st.probs.data();
  std::vector<float> dgi(k), gi(k);  // d/d unscaled gate, unscaled gate
  for (int64_t t = 0; t < n; ++t) {
    const int32_t* idx = st.idx.data() + t * k;
    double dot = 0.0, sum_s = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      dgi[j] = st.keep[t * k + j] ? dg[t * k + j] * sf : 0.0f;
      gi[j] = g[t * k + j] / sf;
      dot += static_cast<double>(dgi[j]) * gi[j];
      sum_s += p[t * E + idx[j]];
    }
    for (int64_t j = 0; j < k; ++j) {
      if (softmax && !moe_.moe_router_pre_softmax) {  // g = softmax(z[idx])
        dz[t * E + idx[j]] += static_cast<float>(gi[j] * (dgi[j] - dot));
      } else if (softmax || k == 1) {  // g = probs[idx]
        dscore[t * E + idx[j]] += dgi[j];
      } else {  // g = s[idx] / Σ s[idx]
        dscore[t * E + idx[j]] += static_cast<float>((dgi[j] - dot) / sum_s);
      }
    }
  }
  loss_gradients(aux_scale, st, dscore, dz);
  if (softmax) {
    ops::softmax_rows_backward(st.select, st.probs, st.select);
  } else {
    ops::sigmoid_backward(st.select, st.probs, st.select);
  }
  ops::add(st.dlogits, st.select);
  st.device_dlogits = ops::to_device(st.dlogits, dx_NH.device());
  ops::linear_backward_dx(st.device_dlogits, weight_->value, dx_NH, accumulate);
}

void Router::backward_dw(RouterStash& st) const {
  const int64_t E = experts_, H = hidden_;
  if (ctx_.tp->size() == 1) {
    ops::linear_backward_dw(st.device_dlogits, st.x, weight_->grad);
    return;
  }
  ensure_shape(st.dweight, {E, H}).zero();
  ops::linear_backward_dw(st.device_dlogits, st.x, st.dweight);
  // Summed over TP here; the CP parts are summed with the other dense gradients over DP×CP.
  ctx_.tp->all_reduce(st.dweight.data(), E * H, CommDType::kFloat32, ReduceOp::kSum);
  ops::add(weight_->grad, st.dweight);
}

}  // namespace moefold
