#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

RouterRowConfig Router::row_config() const {
  RouterRowConfig c;
  c.experts = static_cast<int32_t>(experts_);
  c.topk = static_cast<int32_t>(topk_);
  c.softmax = moe_.moe_router_score_function == RouterScoreFunction::kSoftmax;
  c.pre_softmax = moe_.moe_router_pre_softmax;
  c.num_groups = moe_.moe_router_num_groups;
  c.group_topk = moe_.moe_router_group_topk;
  c.scaling_factor = scaling_factor(moe_);
  return c;
}

bool Router::balance_loss() const {
  return moe_.moe_aux_loss_coeff != 0.0 &&
         moe_.moe_router_load_balancing_type != LoadBalancingType::kNone;
}

bool Router::per_sequence() const {
  return moe_.moe_router_load_balancing_type == LoadBalancingType::kSeqAuxLoss;
}

bool Router::z_loss() const { return moe_.moe_z_loss_coeff != 0.0f; }

// Σ_t P[t,e] (per sequence for seq_aux_loss), then Σ_t lse²; none without either loss.
int64_t Router::sum_count(const RouterStash& st) const {
  if (!balance_loss() && !z_loss()) return 0;
  return (balance_loss() ? (per_sequence() ? st.batch * experts_ : experts_) : 0) + 1;
}

int32_t* Router::device_idx(const RouterStash& st) const {
  return reinterpret_cast<int32_t*>(st.record.data() + 2 * sum_count(st));
}

// Logits, scores, choice, gates, lse and the load sums on x's device, into st; starts the host
// copy of st.record's head (with the gates when `with_gates`): the forward's one wait for the
// device.
ops::HostCopy Router::route_on_device(const Tensor& x_nH, bool with_gates, RouterStash& st) const {
  const int64_t n = st.rows, E = experts_, k = topk_;
  const Device device = x_nH.device();
  ensure_shape(st.logits, {n, E}, DType::kFloat32, device);
  ensure_shape(st.probs, {n, E}, DType::kFloat32, device);
  const int64_t sums = sum_count(st), sum_words = 2 * sums;  // float64 sums in 4-byte words
  ensure_shape(st.record, {sum_words + 2 * n * k}, DType::kFloat32, device);
  st.gates = st.record.elements(sum_words + n * k, {n, k});
  st.device_gates = st.gates;
  const Tensor lse = z_loss() ? ensure_shape(st.lse, {n}, DType::kFloat32, device) : Tensor();
  const RouterRowConfig config = row_config();
  ops::linear_forward(x_nH, weight_->value, st.logits);
  ops::route_forward(st.logits, expert_bias_ != nullptr ? expert_bias_->value : Tensor(), st.probs,
                     device_idx(st), st.gates, lse, config);
  if (sums > 0) {
    const int64_t groups = balance_loss() ? (per_sequence() ? st.batch : 1) : 0;
    ops::route_load_sums(st.probs, lse, st.row_group, groups,
                         reinterpret_cast<double*>(st.record.data()), config);
  }
  return ops::start_to_host(st.record.elements(0, {sum_words + n * k * (with_gates ? 2 : 1)}));
}

void Router::forward(const Tensor& x_nH, int64_t batch, int64_t seq, std::vector<int64_t> tokens,
                     RouterStash& st) const {
  start_forward(x_nH, batch, seq, std::move(tokens), st);
  finish_forward(st);
}

void Router::start_forward(const Tensor& x_nH, int64_t batch, int64_t seq,
                           std::vector<int64_t> tokens, RouterStash& st) const {
  const int64_t n = x_nH.numel() / hidden_, N = batch * seq;
  MOEFOLD_CHECK(x_nH.numel() == n * hidden_ && static_cast<int64_t>(tokens.size()) == n);
  for (int64_t t : tokens) MOEFOLD_CHECK(t >= 0 && t < N, "token " << t << " of " << N);
  st.batch = batch;
  st.seq = seq;
  st.tokens = std::move(tokens);
  st.rows = n;
  st.x = x_nH;
  st.row_group.clear();
  if (balance_loss() && per_sequence()) {
    for (int64_t t : st.tokens) st.row_group.push_back(static_cast<int32_t>(t / seq));
  }
  st.routed = route_on_device(x_nH, moe_.moe_expert_capacity_factor > 0.0, st);
}

void Router::finish_forward(RouterStash& st) const {
  const int64_t n = st.rows, batch = st.batch, seq = st.seq, N = batch * seq, E = experts_,
                k = topk_;
  const bool capacity = moe_.moe_expert_capacity_factor > 0.0;
  const Tensor host = st.routed.wait();
  const int64_t sums = sum_count(st);
  const float* words = host.data();  // the record's head: 2·sums words of sums, then idx
  // Byte copies (the record packs doubles and int32 into float words); either part may be
  // empty (no balance loss, or a rank with no rows), and memcpy must not see a null pointer.
  std::vector<double> load_sums(sums);
  if (sums > 0) std::memcpy(load_sums.data(), words, sizeof(double) * sums);
  int32_t* idx = ensure_size(st.idx, n * k);
  if (n > 0) std::memcpy(idx, words + 2 * sums, sizeof(int32_t) * n * k);
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
  apply_capacity(st, capacity ? words + 2 * sums + n * k : nullptr);
  compute_losses(st, std::move(load_sums));
}

// MODEL.md capacity: cap = ceil(N·k/E·cf) per expert over the whole micro-batch, assignments
// taken in token order (by gate first under the probs policy). When the micro-batch's tokens are
// split over tp_cp, every rank gathers all choices, gates and token indices, decides for all of
// them (the one-process decision) and keeps its own rows' part.
void Router::apply_capacity(RouterStash& st, const float* gates_nk) const {
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
  group.all_gather_v(gates_nk, n * k, gates.data(), assignments, CommDType::kFloat32);
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

// The losses from this rank's load sums (sum_count(st) of them), summed over tp_cp at once.
void Router::compute_losses(RouterStash& st, std::vector<double> sums) const {
  const int64_t N = st.batch * st.seq, E = experts_, S = st.seq;
  st.aux_loss = 0.0;
  st.z_loss = 0.0;
  if (sums.empty()) return;
  const double coeff = moe_.moe_aux_loss_coeff;
  const bool balance = balance_loss(), per_seq = per_sequence();
  const int64_t groups = static_cast<int64_t>(sums.size()) - 1;  // entries of Σ_t P
  ctx_.tp_cp->all_reduce(std::span<double>(sums));
  if (balance) {
    const std::vector<int64_t>& counts = per_seq ? st.total_seq_counts : st.total_counts;
    const double tokens = per_seq ? S : N;
    double total = 0.0;
    for (int64_t i = 0; i < groups; ++i) total += sums[i] * counts[i];
    st.aux_loss = coeff * E / (topk_ * tokens * tokens) * total / (per_seq ? st.batch : 1);
  }
  if (z_loss()) st.z_loss = moe_.moe_z_loss_coeff * sums[groups] / N;
}

void Router::backward_dx(const Tensor& dgates_NK, double aux_scale, Tensor& dx_NH, bool accumulate,
                         RouterStash& st) const {
  const int64_t n = st.rows, N = st.batch * st.seq, E = experts_, S = st.seq;
  MOEFOLD_CHECK(dgates_NK.numel() == n * topk_ && dx_NH.numel() == n * hidden_);
  ensure_shape(st.dlogits, {n, E}, DType::kFloat32, dx_NH.device());
  RouterBackwardConfig b;
  b.row = row_config();
  b.balance = balance_loss();
  const bool per_seq = per_sequence();
  if (b.balance) {
    const double coeff = moe_.moe_aux_loss_coeff, tokens = per_seq ? S : N;
    b.balance_weight =
        aux_scale * coeff * E / (topk_ * tokens * tokens) / (per_seq ? st.batch : 1);
  }
  b.z_loss = z_loss();
  b.z_factor = aux_scale * moe_.moe_z_loss_coeff * 2.0;
  b.z_tokens = static_cast<double>(N);
  const bool capacity = moe_.moe_expert_capacity_factor > 0.0;
  const std::vector<int64_t>& counts = per_seq ? st.total_seq_counts : st.total_counts;
  ops::route_backward(dgates_NK, capacity ? std::span<const uint8_t>(st.keep)
                                          : std::span<const uint8_t>(),
                      st.gates, st.probs, st.logits, device_idx(st), b.z_loss ? st.lse : Tensor(),
                      b.balance ? std::span<const int64_t>(counts) : std::span<const int64_t>(),
                      st.row_group, st.dlogits, b);
  ops::linear_backward_dx(st.dlogits, weight_->value, dx_NH, accumulate);
}

void Router::backward_dw(RouterStash& st) const {
  const int64_t E = experts_, H = hidden_;
  if (ctx_.tp->size() == 1) {
    ops::linear_backward_dw(st.dlogits, st.x, weight_->grad);
    return;
  }
  ensure_shape(st.dweight, {E, H}).zero();
  ops::linear_backward_dw(st.dlogits, st.x, st.dweight);
  // Summed over TP here; the CP parts are summed with the other dense gradients over DP×CP.
  ctx_.tp->all_reduce(st.dweight.data(), E * H, CommDType::kFloat32, ReduceOp::kSum);
  ops::add(weight_->grad, st.dweight);
}

}  // namespace moefold
