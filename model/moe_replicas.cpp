#include "model/moe_replicas.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "model/scratch.h"
#include "parallel/blocked_timer.h"
#include "tensor/check.h"

namespace moefold {

ExpertReplicas::ExpertReplicas(const ParallelContext& ctx, int64_t experts, Parameter* gate,
                               Parameter* up, Parameter* down)
    : ctx_(ctx),
      gate_(gate),
      up_(up),
      down_(down),
      experts_(experts),
      ffn_(gate->value.dim(1)),
      hidden_(gate->value.dim(2)),
      budget_{ctx.config.fssdp_spare_slots, ctx.config.fssdp_overlap_degree},
      rematerialise_(ctx.config.fssdp_rematerialise),
      owners_(ep_owners(experts, ctx.ep->size())),
      window_(experts, kWindow) {
  MOEFOLD_CHECK(gate->value.dim(0) * ctx.ep->size() == experts,
                "load-driven FSSDP needs whole experts on each EP rank");
}

// The owned experts as the GEMMs read them (bf16 compute copies under training.bf16), or their
// gradients.
std::vector<ShardPart> ExpertReplicas::owned_parts(bool gradients) const {
  std::vector<ShardPart> parts;
  for (Parameter* p : {gate_, up_, down_}) {
    const Tensor& t = gradients ? p->grad : p->compute_value();
    parts.push_back({t.raw_data(), ffn_ * hidden_, comm_dtype_of(t.dtype())});
  }
  return parts;
}

// The slots' weights as gathered (the compute copies under training.bf16), or their gradients.
std::vector<ShardPart> ExpertReplicas::slot_parts(const ReplicaStash& st, bool gradients) const {
  std::vector<ShardPart> parts;
  for (const Tensor* t : gradients ? std::array{&st.w_gate, &st.w_up, &st.w_down}
                                   : std::array{&gate_weights(st), &up_weights(st),
                                                &down_weights(st)})
    parts.push_back({t->raw_data(), ffn_ * hidden_, comm_dtype_of(t->dtype())});
  return parts;
}

void ExpertReplicas::start_gather(ReplicaStash& st) {
  MOEFOLD_CHECK(!st.reduction_pending, "FSSDP: finish_backward_dw was not called");
  st.placement = forced_ ? *forced_
                         : plan_expert_placement(window_.sum(), owners_, ctx_.ep->size(), budget_);
  const ExpertPlacement& p = st.placement;
  MOEFOLD_CHECK(p.ranks == ctx_.ep->size() && p.owner == owners_,
                "placement over " << p.ranks << " ranks does not fit EP " << ctx_.ep->size());
  st.slots = static_cast<int64_t>(p.slots[ctx_.ep->rank()].size());
  st.slots_per_rank = p.max_slots();
  ++stats_.micro_batches;
  stats_.replicas += p.replicas();
  stats_.replicas_held += st.slots - p.owned[ctx_.ep->rank()];
  st.materialised = false;
  st.gather_started = true;
  rematerialise(st);
}

void ExpertReplicas::rematerialise(ReplicaStash& st) {
  if (st.materialised) return;
  st.materialised = true;
  const int64_t S = st.slots, F = ffn_, H = hidden_;
  ensure_shape(st.w_gate, {S, F, H});
  ensure_shape(st.w_up, {S, F, H});
  ensure_shape(st.w_down, {S, H, F});
  if (rounds()) {
    const DType dtype = gate_->compute.dtype();
    ensure_shape(st.c_gate, {S, F, H}, dtype);
    ensure_shape(st.c_up, {S, F, H}, dtype);
    ensure_shape(st.c_down, {S, H, F}, dtype);
  }
  const int64_t before = st.gather.bytes_sent;
  start_replica_gather(*ctx_.ep, st.placement, owned_parts(false), slot_parts(st, false),
                       st.gather);
  stats_.gather_bytes += st.gather.bytes_sent - before;
}

void ExpertReplicas::finish_gather(ReplicaStash& st) {
  BlockedTimer timer(stats_.blocked_seconds);
  finish_replica_gather(st.gather);
}

const Tensor& ExpertReplicas::gate_weights(const ReplicaStash& st) const {
  return rounds() ? st.c_gate : st.w_gate;
}
const Tensor& ExpertReplicas::up_weights(const ReplicaStash& st) const {
  return rounds() ? st.c_up : st.w_up;
}
const Tensor& ExpertReplicas::down_weights(const ReplicaStash& st) const {
  return rounds() ? st.c_down : st.w_down;
}

void ExpertReplicas::release(ReplicaStash& st) const {
  st.gather_started = false;
  if (!rematerialise_) return;
  st.materialised = false;
  for (Tensor* t : {&st.w_gate, &st.w_up, &st.w_down, &st.c_gate, &st.c_up, &st.c_down})
    *t = Tensor();
  st.gather.staging.clear();
}

void ExpertReplicas::route(std::span<const int32_t> idx, std::span<const uint8_t> keep,
                           ReplicaStash& st) {
  const ExpertPlacement& p = st.placement;
  const int W = p.ranks, me = ctx_.ep->rank();
  const int64_t E = experts_, S = st.slots_per_rank, A = static_cast<int64_t>(idx.size());
  // This rank's kept rows per expert, then its plan's hash: one all-gather gives every rank the
  // routing table's input and proves that every rank planned the same.
  std::vector<int64_t> mine(E + 1, 0), all(static_cast<size_t>(W) * (E + 1));
  for (int64_t a = 0; a < A; ++a)
    if (keep[a]) ++mine[idx[a]];
  const uint64_t hash = p.hash();
  std::memcpy(&mine[E], &hash, sizeof(hash));
  ctx_.ep->all_gather(mine.data(), E + 1, all.data(), CommDType::kInt64);
  std::vector<int64_t> counts_WE(static_cast<size_t>(W) * E), load(E, 0);
  for (int r = 0; r < W; ++r) {
    MOEFOLD_CHECK(all[r * (E + 1) + E] == mine[E],
                  "FSSDP placement differs between EP rank " << me << " and EP rank " << r);
    for (int64_t e = 0; e < E; ++e) {
      counts_WE[r * E + e] = all[r * (E + 1) + e];
      load[e] += counts_WE[r * E + e];
      if (owners_[e] == me) stats_.ep_rows += counts_WE[r * E + e];
    }
  }
  window_.push(load);
  // Calibration: the actual counts go only to the materialised replicas that lower the peak for
  // them (a forced placement is used as it is). Slots keep the materialised layout.
  const ExpertPlacement routing = forced_ ? p : calibrate_placement(p, load);
  const ReplicaRoutes routes = route_to_replicas(routing, counts_WE);
  // Each assignment in (token, choice) order takes the next holder with rows left for this rank.
  std::vector<int64_t> holder(E, 0), left(E, 0);
  auto next_holder = [&](int64_t e) {
    while (left[e] == 0) {
      MOEFOLD_CHECK(holder[e] < static_cast<int64_t>(routing.holders[e].size()), "routing table");
      left[e] = routes.to(routing, me, e, holder[e]);
      if (left[e] == 0) ++holder[e];
    }
  };
  st.dispatch_idx.assign(A, 0);
  for (int64_t a = 0; a < A; ++a) {
    if (!keep[a]) continue;
    const int64_t e = idx[a];
    next_holder(e);
    const int r = routing.holders[e][holder[e]];
    st.dispatch_idx[a] = static_cast<int32_t>(r * S + p.slot_of(r, e));
    if (--left[e] == 0) ++holder[e];
  }
  // Rows every source sends to each of this rank's slots (none to a replica calibrated out).
  st.received.assign(static_cast<size_t>(W) * S, 0);
  for (int64_t i = 0; i < st.slots; ++i) {
    const int64_t e = p.slots[me][i];
    const std::vector<int>& h = routing.holders[e];
    const auto at = std::find(h.begin(), h.end(), me);
    if (at == h.end()) continue;
    for (int s = 0; s < W; ++s) {
      st.received[s * S + i] = routes.to(routing, s, e, at - h.begin());
      stats_.expert_rows += st.received[s * S + i];
    }
  }
}

void ExpertReplicas::start_gradient_reduce(ReplicaStash& st) {
  const int64_t before = st.reduction.bytes_sent;
  start_replica_gradient_reduce(*ctx_.ep, st.placement, slot_parts(st, true), st.reduction);
  stats_.reduce_bytes += st.reduction.bytes_sent - before;
  st.reduction_pending = true;
}

void ExpertReplicas::finish_gradient_reduce(ReplicaStash& st) {
  if (!st.reduction_pending) return;
  BlockedTimer timer(stats_.blocked_seconds);
  finish_replica_gradient_reduce(*ctx_.ep, st.placement, slot_parts(st, true), owned_parts(true),
                                 st.reduction);
  st.reduction_pending = false;
}

}  // namespace moefold
