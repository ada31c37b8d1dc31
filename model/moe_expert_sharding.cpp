// FSSDP for the MoE layer (moe_layer.h): the sparse materialisation of the expert weights from
// their expert-DP shards, and the sparse reduce-scatter of their gradients; and the dispatch to
// the slots of load-driven FSSDP (model/moe_replicas.h).
#include <algorithm>
#include <chrono>
#include <cstddef>

#include "model/moe_layer.h"
#include "model/scratch.h"
#include "tensor/check.h"
#include "tensor/ops.h"
#include "tensor/wall_clock.h"

namespace moefold {

const Tensor& MoeLayer::gate_weights(const MoeStash& st) const {
  if (replicas_) return replicas_->gate_weights(st.replicas);
  return workspace_ ? workspace_->compute_gate() : w_gate_->compute_value();
}
const Tensor& MoeLayer::up_weights(const MoeStash& st) const {
  if (replicas_) return replicas_->up_weights(st.replicas);
  return workspace_ ? workspace_->compute_up() : w_up_->compute_value();
}
const Tensor& MoeLayer::down_weights(const MoeStash& st) const {
  if (replicas_) return replicas_->down_weights(st.replicas);
  return workspace_ ? workspace_->compute_down() : w_down_->compute_value();
}

// One expert's shard: its gate rows, up rows and down columns, (Fs,H) (Fs,H) (H,Fs); the
// weights as the GEMMs read them (bf16 compute copies under training.bf16), or the gradients.
std::vector<ShardPart> MoeLayer::shard_parts(bool gradients) const {
  std::vector<ShardPart> parts;
  for (Parameter* p : {w_gate_, w_up_, w_down_}) {
    const Tensor& t = gradients ? p->grad : p->compute_value();
    parts.push_back({t.raw_data(), t.numel() / local_experts_, comm_dtype_of(t.dtype())});
  }
  return parts;
}

// A local expert is needed when this rank's experts compute any of its rows in this micro-batch.
void MoeLayer::plan_materialisation(MoeStash& st) const {
  const int64_t El = local_experts_;
  std::vector<uint8_t> needs(El, 0);
  for (int c = 0; c < st.plan.chunks; ++c) {
    const int64_t* off = st.plan.chunk_expert_offsets(c);
    for (int64_t e = 0; e < El; ++e) needs[e] |= off[e + 1] > off[e];
  }
  int64_t shard = 0;
  for (const ShardPart& part : shard_parts(false)) shard += part.per_item;
  st.fssdp = plan_sparse_shards(*ctx_.edp, needs, shard);
  workspace_->experts_gathered += st.fssdp.needed[ctx_.edp->rank()];
  workspace_->expert_slots += El;
  // The grouped GEMMs see only the materialised experts: the others have no rows in any chunk,
  // so each chunk's offsets keep those of the needed experts and the end.
  const std::vector<int64_t> experts = st.fssdp.items_of(ctx_.edp->rank());
  const int64_t n = static_cast<int64_t>(experts.size());
  st.fssdp_offsets.resize(st.plan.chunks * (n + 1));
  for (int c = 0; c < st.plan.chunks; ++c) {
    const int64_t* off = st.plan.chunk_expert_offsets(c);
    int64_t* compact = st.fssdp_offsets.data() + c * (n + 1);
    for (int64_t i = 0; i < n; ++i) compact[i] = off[experts[i]];
    compact[n] = off[El];
  }
}

namespace {

// n experts of (rows, cols) each, viewing `memory`, which grows to the most asked for.
Tensor expert_view(Tensor& memory, int64_t n, int64_t rows, int64_t cols,
                   DType dtype = DType::kFloat32) {
  const int64_t elements = std::max<int64_t>(n * rows * cols, 1);
  if (!memory.defined() || memory.numel() < elements || memory.dtype() != dtype)
    memory = Tensor::empty({elements}, dtype);
  return memory.elements(0, {n, rows, cols});
}

}  // namespace

// The gather's receive buffer: float32 shards, or under training.bf16 the compute copies' bits.
static Tensor& gather_buffer(ExpertWorkspace& ws, bool rounded) {
  return rounded ? ws.gathered : ws.exchange;
}

void MoeLayer::start_materialisation(MoeStash& st) const {
  ExpertWorkspace& ws = *workspace_;
  MOEFOLD_CHECK(!ws.reduction_pending, "FSSDP: finish_backward_dw was not called");
  const int64_t n = st.fssdp.needed[ctx_.edp->rank()];
  const std::vector<ShardPart> parts = shard_parts(false);
  const DType dtype = parts[0].tensor_dtype();
  Tensor& gathered = gather_buffer(ws, dtype != DType::kFloat32);
  ensure_shape(gathered, {st.fssdp.ranks * n * st.fssdp.shard}, dtype);
  start_sparse_all_gather(*ctx_.edp, st.fssdp, parts, gathered.raw_data(), ws.gather);
}

void MoeLayer::finish_materialisation(const MoeStash& st) const {
  ExpertWorkspace& ws = *workspace_;
  const auto start = std::chrono::steady_clock::now();
  ws.gather.handle.wait();
  ws.blocked_seconds += seconds_since(start);
  const int64_t n = st.fssdp.needed[ctx_.edp->rank()], F = local_ffn_, H = hidden_;
  ws.w_gate = expert_view(ws.gate_memory, n, F, H);
  ws.w_up = expert_view(ws.up_memory, n, F, H);
  ws.w_down = expert_view(ws.down_memory, n, H, F);
  ws.rounded = w_gate_->compute.defined();  // training.bf16: the gathered compute copies
  if (!ws.rounded) {
    move_shards(st, true, ws.exchange, ws.w_gate, ws.w_up, ws.w_down);
    return;
  }
  const DType dtype = w_gate_->compute.dtype();
  ws.c_gate = expert_view(ws.c_gate_memory, n, F, H, dtype);
  ws.c_up = expert_view(ws.c_up_memory, n, F, H, dtype);
  ws.c_down = expert_view(ws.c_down_memory, n, H, F, dtype);
  move_shards(st, true, ws.gathered, ws.c_gate, ws.c_up, ws.c_down);
}

void MoeLayer::move_shards(const MoeStash& st, bool to_materialised, const Tensor& exchange,
                           const Tensor& gate, const Tensor& up, const Tensor& down) const {
  const int P = st.fssdp.ranks;
  const int64_t n = st.fssdp.needed[ctx_.edp->rank()], F = local_ffn_, H = hidden_;
  const int64_t Fs = F / P;
  const size_t bytes = dtype_size(exchange.dtype());
  MOEFOLD_CHECK(gate.dtype() == exchange.dtype() && up.dtype() == exchange.dtype() &&
                down.dtype() == exchange.dtype());
  // The element at `offset` of t, as bytes.
  auto at = [bytes](const Tensor& t, int64_t offset) {
    return static_cast<std::byte*>(t.raw_data()) + offset * bytes;
  };
  // rows × cols elements between a materialised tensor (row stride m_stride) and the exchange
  // buffer (packed), in the direction asked for.
  auto move = [to_materialised, bytes](std::byte* materialised, int64_t m_stride,
                                       std::byte* exchanged, int64_t rows, int64_t cols) {
    if (to_materialised) {
      ops::copy_rows(materialised, m_stride, exchanged, cols, rows, cols, bytes);
    } else {
      ops::copy_rows(exchanged, cols, materialised, m_stride, rows, cols, bytes);
    }
  };
  for (int j = 0; j < P; ++j) {
    for (int64_t i = 0; i < n; ++i) {  // the i-th materialised expert
      const int64_t block = (j * n + i) * st.fssdp.shard;
      move(at(gate, (i * F + j * Fs) * H), H, at(exchange, block), Fs, H);  // rows j·Fs.. of (F,H)
      move(at(up, (i * F + j * Fs) * H), H, at(exchange, block + Fs * H), Fs, H);
      // (H,Fs) in the exchange: columns j·Fs.. of (H,F)
      move(at(down, i * H * F + j * Fs), F, at(exchange, block + 2 * Fs * H), H, Fs);
    }
  }
}

void MoeLayer::start_gradient_reduction(const MoeStash& st) const {
  ExpertWorkspace& ws = *workspace_;
  const int64_t n = st.fssdp.needed[ctx_.edp->rank()];
  ensure_shape(ws.exchange, {st.fssdp.ranks * n * st.fssdp.shard});
  move_shards(st, false, ws.exchange, ws.w_gate, ws.w_up, ws.w_down);
  start_sparse_reduce_scatter(*ctx_.edp, st.fssdp, ws.exchange.data(), ws.reduction);
  ws.reduction_pending = true;
}

void MoeLayer::finish_backward_dw(MoeStash& st) const {
  if (replicas_) replicas_->finish_gradient_reduce(st.replicas);
  if (!workspace_ || !workspace_->reduction_pending) return;
  ExpertWorkspace& ws = *workspace_;
  const auto start = std::chrono::steady_clock::now();
  finish_sparse_reduce_scatter(st.fssdp, ws.reduction, shard_parts(true));
  ws.blocked_seconds += seconds_since(start);
  ws.reduction_pending = false;
}

void MoeLayer::start_expert_gather(MoeStash& st) const {
  if (replicas_) replicas_->start_gather(st.replicas);
}

// The router's choices become dispatch ids of slots (holder rank · S + slot); the rows each rank
// sends to this rank's slots come from the routing table, so the plan exchanges no counts.
void MoeLayer::plan_replica_dispatch(int64_t n, MoeStash& st) const {
  ReplicaStash& rs = st.replicas;
  const int64_t k = topk_;
  replicas_->route(st.router.idx, st.router.keep, rs);
  const int64_t V = ctx_.ep->size() * rs.slots_per_rank;
  st.counts.assign(V, 0);
  st.rows = ops::build_expert_permutation(rs.dispatch_idx.data(), st.router.keep.data(), n, k, V,
                                          st.counts.data(), ensure_size(st.perm, n * k));
  st.plan = dispatcher_.plan_known(st.counts, rs.slots_per_rank, rs.received);
}

}  // namespace moefold
