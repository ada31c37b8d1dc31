#include "model/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

namespace {

DispatcherKind dispatcher_kind(const MoeConfig& moe) {
  return moe.moe_token_dispatcher_type == "allgather" ? DispatcherKind::kAllGather
                                                      : DispatcherKind::kAllToAll;
}

}  // namespace

MoeLayer::MoeLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                   ParameterRegistry& registry, std::shared_ptr<ExpertWorkspace> workspace)
    : ctx_(ctx),
      hidden_(config.hidden_size),
      experts_(config.moe.num_experts),
      topk_(config.moe.moe_router_topk),
      ffn_(config.moe.moe_ffn_hidden_size),
      sequence_parallel_(ctx.config.sequence_parallel && ctx.tp->size() > 1),
      router_(config, ctx, layer, registry),
      dispatcher_({ctx.ep.get(), ctx.etp.get(), ctx.etp_ep.get()}, dispatcher_kind(config.moe),
                  config.moe.num_experts, std::max(1, ctx.config.moe_a2a_overlap_chunks)) {
  const std::string prefix = "layers/" + std::to_string(layer) + "/moe/";
  const float std = config.init_method_std;
  const float out_std = std / std::sqrt(2.0f * config.num_layers);
  const int64_t E = experts_, F = ffn_, H = hidden_;
  const TensorLayout gate = shard_layout(prefix + "experts/w_gate", {E, F, H}, ctx.coords);
  local_experts_ = gate.local_shape[0];
  local_ffn_ = gate.local_shape[1];
  if (ctx.config.moe_fssdp) workspace_ = workspace ? workspace : std::make_shared<ExpertWorkspace>();
  // Under FSSDP the registry holds this rank's expert-DP shard (checkpointed as such).
  auto stored = [&](const std::string& name, std::vector<int64_t> shape) {
    TensorLayout layout = shard_layout(prefix + name, std::move(shape), ctx.coords);
    return workspace_ ? fully_sharded_expert_layout(layout, ctx.coords) : layout;
  };
  w_gate_ = registry.add_weight(stored("experts/w_gate", {E, F, H}), std, true);
  w_up_ = registry.add_weight(stored("experts/w_up", {E, F, H}), std, true);
  w_down_ = registry.add_weight(stored("experts/w_down", {E, H, F}), out_std, true);
  if (ctx.config.fssdp_spare_slots > 0) {
    replicas_ = std::make_unique<ExpertReplicas>(ctx, E, w_gate_, w_up_, w_down_);
  }
  if (config.moe.moe_shared_expert_intermediate_size > 0) {
    shared_ = std::make_unique<Mlp>(config, ctx, prefix + "shared/",
                                    config.moe.moe_shared_expert_intermediate_size, registry,
                                    sequence_parallel_);
  }
}

MoeLayer::ChunkRows MoeLayer::chunk_rows(const MoeStash& st, int chunk) const {
  const int64_t first = st.plan.expert_chunk_rows[chunk];
  if (workspace_) {  // the materialised experts only
    const int64_t n = st.fssdp.needed[ctx_.edp->rank()];
    return {first, st.plan.expert_chunk_rows[chunk + 1],
            {st.fssdp_offsets.data() + chunk * (n + 1), static_cast<size_t>(n + 1)}};
  }
  const int64_t groups = replicas_ ? st.replicas.slots : local_experts_;  // later slots are empty
  return {first, st.plan.expert_chunk_rows[chunk + 1],
          {st.plan.chunk_expert_offsets(chunk), static_cast<size_t>(groups + 1)}};
}

// Grouped SwiGLU experts on the rows of one dispatched chunk.
void MoeLayer::experts_forward(int chunk, MoeStash& st) const {
  ComputeTimer timer(st.expert_compute);
  const ChunkRows c = chunk_rows(st, chunk);
  const Tensor gate = c.of(st.gate), up = c.of(st.up), act = c.of(st.act), xe = c.of(st.xe);
  ops::grouped_linear_forward(xe, gate_weights(st), gate, c.offsets);
  ops::grouped_linear_forward(xe, up_weights(st), up, c.offsets);
  ops::swiglu_forward(gate, up, act);
  ops::grouped_linear_forward(act, down_weights(st), c.of(st.ye), c.offsets);
}

// Rows [first, end) of the N rows that this rank of a token-splitting group of `size` routes:
// even contiguous shares in rank order.
static int64_t share_begin(int64_t N, int rank, int size) { return N * rank / size; }

// Micro-batch token index b·S + s of rows [first, first + n) of the CP shard's N rows.
static std::vector<int64_t> micro_batch_tokens(const MoeRows& rows, int64_t N, int64_t first,
                                               int64_t n) {
  const int64_t per_sequence = N / rows.batch;
  std::vector<int64_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = first + i;
    const int64_t s = rows.positions ? rows.positions[row] : row % per_sequence;
    tokens[i] = (row / per_sequence) * rows.seq + s;
  }
  return tokens;
}

void MoeLayer::forward(const Tensor& x_NH, const MoeRows& rows, double aux_scale, Tensor& y_NH,
                       bool accumulate, MoeStash& st) const {
  const int64_t H = hidden_, E = experts_, k = topk_, N = x_NH.numel() / H;
  // The CP shard's rows: N of them, or N·TP under sequence parallelism, where x holds this TP
  // rank's N and routes all of them. Otherwise every TP rank holds the same N rows and routes an
  // even share, so the experts see every token once (MoE Parallel Folding).
  Communicator& tp = *ctx_.tp;
  const int64_t shard_rows = sequence_parallel_ ? N * tp.size() : N;
  MOEFOLD_CHECK(x_NH.numel() == N * H && y_NH.numel() == N * H && rows.batch > 0 &&
                shard_rows % rows.batch == 0 &&
                (rows.positions || shard_rows == rows.batch * rows.seq));
  st.aux_scale = aux_scale;
  if (replicas_ && !st.replicas.gather_started) replicas_->start_gather(st.replicas);
  const bool split = splits_rows();
  const int64_t first = split ? share_begin(N, tp.rank(), tp.size()) : 0;
  const int64_t n = split ? share_begin(N, tp.rank() + 1, tp.size()) - first : N;
  const int64_t shard_first = sequence_parallel_ ? tp.rank() * N : first;
  st.input_rows = N;
  st.first = first;
  // With one dispatch rank and no expert gathers there is nothing to hide the shared expert
  // behind; issued before the host waits for the routing choices, it keeps the device busy
  // while the host plans the dispatch instead (not under TP, whose all-reduce the host waits for).
  const bool shared_first =
      shared_ && ctx_.etp_ep->size() == 1 && !workspace_ && !replicas_ && tp.size() == 1;
  router_.start_forward(x_NH.slice_rows(first, first + n), rows.batch, rows.seq,
                        micro_batch_tokens(rows, shard_rows, shard_first, n), st.router);
  if (shared_first) shared_->forward(x_NH, y_NH, accumulate, st.shared);
  router_.finish_forward(st.router);

  // Local work: sort the kept assignments by expert, agree on counts, order rows for sending.
  if (replicas_) {
    plan_replica_dispatch(n, st);
  } else {
    st.counts.assign(E, 0);
    st.rows = ops::build_expert_permutation(st.router.idx.data(), st.router.keep.data(), n, k, E,
                                            st.counts.data(), ensure_size(st.perm, n * k));
    st.plan = dispatcher_.plan(st.counts);
  }
  if (workspace_) {  // the needed experts' shards travel while the tokens are dispatched
    plan_materialisation(st);
    start_materialisation(st);
  }
  const int64_t R = st.rows, Re = st.plan.expert_rows, F = local_ffn_;
  int32_t* send_perm = ensure_size(st.send_perm, R);
  for (int64_t r = 0; r < R; ++r) send_perm[r] = st.perm[st.plan.source_order[r]];
  const DType act = x_NH.dtype();
  ops::permute_tokens(x_NH.slice_rows(first, first + n), st.send_perm,
                      ensure_shape(st.xs, {R, H}, act), k);

  st.buffers.dtype = act;
  dispatcher_.start_dispatch(st.plan, st.xs.raw_data(), H, st.buffers);
  if (shared_ && !shared_first) {  // computes while the dispatch is in flight
    shared_->forward(x_NH, y_NH, accumulate, st.shared);
  } else if (!shared_ && !accumulate) {
    y_NH.zero();
  }
  ensure_shape(st.xe, {Re, H}, act);
  ensure_shape(st.gate, {Re, F}, act);
  ensure_shape(st.up, {Re, F}, act);
  ensure_shape(st.act, {Re, F}, act);
  ensure_shape(st.ye, {Re, H}, act);
  ensure_shape(st.ys, {R, H}, act);
  if (workspace_) finish_materialisation(st);
  if (replicas_) replicas_->finish_gather(st.replicas);
  for (int c = 0; c < st.plan.chunks; ++c) {  // chunk c computes while c+1 is exchanged
    dispatcher_.finish_dispatch_chunk(st.plan, c, H, st.buffers, st.xe.raw_data());
    experts_forward(c, st);
    dispatcher_.start_combine_chunk(st.plan, c, st.ye.raw_data(), H, st.ys.raw_data(),
                                    st.buffers);
  }
  dispatcher_.finish_combine(st.buffers);
  if (replicas_) replicas_->release(st.replicas);
  if (!split) {
    ops::combine_tokens(st.ys, st.send_perm, st.router.device_gates, y_NH.view({N, H}));
    return;
  }
  // Each rank's routed rows, gathered so the output is whole on every rank again.
  ensure_shape(st.routed, {n, H}, act).zero();
  ops::combine_tokens(st.ys, st.send_perm, st.router.device_gates, st.routed);
  gather_token_shares(st.routed, N, st.routed_all);
  ops::add(y_NH, st.routed_all);
}

// all_NH (N,H) = the rows of every rank's share_nH, in rank order (all-gather over TP).
void MoeLayer::gather_token_shares(const Tensor& share_nH, int64_t N, Tensor& all_NH) const {
  Communicator& tokens = *ctx_.tp;
  const int64_t H = hidden_;
  std::vector<int64_t> counts(tokens.size());
  for (int r = 0; r < tokens.size(); ++r) {
    counts[r] = (share_begin(N, r + 1, tokens.size()) - share_begin(N, r, tokens.size())) * H;
  }
  tokens.all_gather_v(share_nH.raw_data(), share_nH.numel(),
                      ensure_shape(all_NH, {N, H}, share_nH.dtype()).raw_data(), counts,
                      comm_dtype_of(share_nH.dtype()));
}

// d/d xe (partial over ETP) of one chunk; gate and up become their gradients.
void MoeLayer::experts_backward_dx(int chunk, MoeStash& st) const {
  ComputeTimer timer(st.expert_compute);
  const ChunkRows c = chunk_rows(st, chunk);
  const Tensor gate = c.of(st.gate), up = c.of(st.up), dact = c.of(st.dact), dxe = c.of(st.dxe);
  ops::grouped_linear_backward_dx(c.of(st.dye), down_weights(st), dact, c.offsets, false);
  ops::swiglu_backward(dact, gate, up, gate, up);
  ops::grouped_linear_backward_dx(gate, gate_weights(st), dxe, c.offsets, false);
  ops::grouped_linear_backward_dx(up, up_weights(st), dxe, c.offsets, true);
}

void MoeLayer::backward_dx(const Tensor& dy_NH, Tensor& dx_NH, MoeStash& st) const {
  const int64_t N = st.input_rows, H = hidden_, F = local_ffn_, k = topk_;
  const int64_t R = st.rows, Re = st.plan.expert_rows, n = st.router.rows, first = st.first;
  const bool split = splits_rows();
  MOEFOLD_CHECK(dy_NH.numel() == N * H && dx_NH.numel() == N * H);
  if (workspace_) start_materialisation(st);  // gathered again: the workspace is shared
  if (replicas_) replicas_->rematerialise(st.replicas);  // when released after forward
  ensure_shape(st.dgates, {n, k}).zero();
  const DType act = dy_NH.dtype();
  ensure_shape(st.dys, {R, H}, act);
  ops::combine_tokens_backward(dy_NH.view({N, H}).slice_rows(first, first + n), st.ys,
                               st.send_perm, st.router.device_gates, st.dys, st.dgates);
  st.buffers.dtype = act;
  dispatcher_.start_dispatch(st.plan, st.dys.raw_data(), H, st.buffers);
  // The router and the shared expert compute while the dispatch is in flight.
  Tensor& dx_routed = split ? ensure_shape(st.routed, {n, H}, act) : dx_NH;  // (n,H)
  router_.backward_dx(st.dgates, st.aux_scale, dx_routed, false, st.router);
  if (shared_) shared_->backward_dx(dy_NH, dx_NH, !split, st.shared);
  ensure_shape(st.dye, {Re, H}, act);
  ensure_shape(st.dact, {Re, F}, act);
  ensure_shape(st.dxe, {Re, H}, act);
  ensure_shape(st.dxs, {R, H}, act);
  if (workspace_) finish_materialisation(st);
  if (replicas_) replicas_->finish_gather(st.replicas);
  for (int c = 0; c < st.plan.chunks; ++c) {
    dispatcher_.finish_dispatch_chunk(st.plan, c, H, st.buffers, st.dye.raw_data());
    experts_backward_dx(c, st);
    dispatcher_.start_combine_chunk(st.plan, c, st.dxe.raw_data(), H, st.dxs.raw_data(),
                                    st.buffers);
  }
  dispatcher_.finish_combine(st.buffers);
  ops::permute_tokens_backward(st.dxs, st.send_perm, dx_routed.view({n, H}), k);
  if (!split) return;
  // The input is replicated over TP, so its gradient is whole on every rank: gather the shares.
  gather_token_shares(st.routed, N, st.routed_all);
  if (shared_) {
    ops::add(dx_NH, st.routed_all);
  } else {
    ops::copy(dx_NH, st.routed_all);
  }
}

void MoeLayer::backward_dw(MoeStash& st) const {
  Tensor d_gate = w_gate_->grad, d_up = w_up_->grad, d_down = w_down_->grad;
  if (workspace_) {  // this micro-batch's gradients, in place of the weights; reduce-scattered
    MOEFOLD_CHECK(!workspace_->reduction_pending, "FSSDP: finish_backward_dw was not called");
    for (Tensor* t : {&workspace_->w_gate, &workspace_->w_up, &workspace_->w_down}) t->zero();
    d_gate = workspace_->w_gate;
    d_up = workspace_->w_up;
    d_down = workspace_->w_down;
  }
  if (replicas_) {  // the slots' partial gradients, in place of their weights; reduced to owners
    MOEFOLD_CHECK(!st.replicas.reduction_pending, "FSSDP: finish_backward_dw was not called");
    d_gate = st.replicas.w_gate;
    d_up = st.replicas.w_up;
    d_down = st.replicas.w_down;
    for (Tensor* t : {&d_gate, &d_up, &d_down}) t->zero();
  }
  for (int chunk = 0; chunk < st.plan.chunks; ++chunk) {
    ComputeTimer timer(st.expert_compute);
    const ChunkRows c = chunk_rows(st, chunk);
    const Tensor xe = c.of(st.xe);
    ops::grouped_linear_backward_dw(c.of(st.dye), c.of(st.act), d_down, c.offsets);
    ops::grouped_linear_backward_dw(c.of(st.gate), xe, d_gate, c.offsets);
    ops::grouped_linear_backward_dw(c.of(st.up), xe, d_up, c.offsets);
  }
  if (workspace_) start_gradient_reduction(st);  // finished by finish_backward_dw
  if (replicas_) replicas_->start_gradient_reduce(st.replicas);
  router_.backward_dw(st.router);
  if (shared_) shared_->backward_dw(st.shared);
}

int64_t MoeLayer::active_parameter_count() const {
  int64_t n = experts_ * hidden_ + topk_ * 3 * hidden_ * ffn_;
  if (shared_) n += shared_->parameter_count();
  return n;
}

}  // namespace moefold
