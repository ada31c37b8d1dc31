#include "parallel/ep_dispatch.h"

#include <algorithm>

#include "parallel/blocked_timer.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

// One block of consecutive rows in a chunk's gathered buffer: rows of one source for one expert.
struct Block {
  int64_t rows;
  int64_t local_expert;  // -1: another rank's expert (all-gather dispatcher)
};

// Fills the expert-side fields of chunk `chunk` from its gathered blocks: the rows, grouped by
// local expert (each expert's blocks in gathered order), become rows of the expert buffer.
void order_chunk_by_expert(const std::vector<Block>& blocks, int chunk, DispatchPlan& plan) {
  const int64_t El = plan.local_experts, first_row = plan.expert_chunk_rows[chunk];
  const size_t first_run = plan.expert_runs.size();
  int64_t* offsets = plan.expert_offsets.data() + chunk * (El + 1);
  offsets[0] = 0;
  for (int64_t i = 0; i < El; ++i) {
    offsets[i + 1] = offsets[i];
    int64_t start = 0;
    for (const Block& b : blocks) {
      if (b.local_expert == i && b.rows > 0) {
        const DispatchPlan::RowRun run{first_row + offsets[i + 1], start, b.rows};
        DispatchPlan::RowRun* last =
            plan.expert_runs.size() > first_run ? &plan.expert_runs.back() : nullptr;
        if (last && last->expert_row + last->rows == run.expert_row &&
            last->gathered_row + last->rows == run.gathered_row) {
          last->rows += run.rows;
        } else {
          plan.expert_runs.push_back(run);
        }
        offsets[i + 1] += b.rows;
      }
      start += b.rows;
    }
  }
  plan.expert_chunk_rows[chunk + 1] = first_row + offsets[El];
  plan.expert_run_chunks[chunk + 1] = static_cast<int64_t>(plan.expert_runs.size());
}

int64_t total(std::span<const int64_t> v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

std::vector<int64_t> scaled(std::span<const int64_t> rows, int64_t width) {
  std::vector<int64_t> out(rows.begin(), rows.end());
  for (int64_t& x : out) x *= width;
  return out;
}

// Makes `t` a (rows, width) buffer of `dtype` (at least one row, so its address is valid).
void* ensure_rows(Tensor& t, int64_t rows, int64_t width, DType dtype) {
  const std::vector<int64_t> shape = {std::max<int64_t>(rows, 1), width};
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype) t = Tensor::empty(shape, dtype);
  return t.raw_data();
}

// Rows of `width` elements of one dtype at a base address (token rows travel in the
// activations' dtype: bf16 under mixed precision).
struct Bytes {
  Bytes(const void* base, int64_t width, DType dtype)
      : base(static_cast<const char*>(base)),
        row_bytes(width * static_cast<int64_t>(dtype_size(dtype))),
        wire(comm_dtype_of(dtype)) {}
  Bytes(const Tensor& t, int64_t width) : Bytes(t.raw_data(), width, t.dtype()) {}
  void* row(int64_t r) const { return const_cast<char*>(base) + r * row_bytes; }

  const char* base;
  int64_t row_bytes;
  CommDType wire;
};

}  // namespace

TokenDispatcher::TokenDispatcher(DispatchGroups groups, DispatcherKind kind, int64_t num_experts,
                                 int chunks)
    : groups_(groups), kind_(kind), experts_(num_experts), chunks_(chunks) {
  MOEFOLD_CHECK(groups_.ep != nullptr && groups_.etp != nullptr && groups_.etp_ep != nullptr);
  MOEFOLD_CHECK(chunks_ >= 1 && experts_ % groups_.ep->size() == 0,
                experts_ << " experts over EP " << groups_.ep->size());
}

DispatchPlan TokenDispatcher::plan(std::span<const int64_t> counts_E) const {
  MOEFOLD_CHECK(static_cast<int64_t>(counts_E.size()) == experts_);
  DispatchPlan plan = plan_source(counts_E, experts_ / groups_.ep->size());
  if (kind_ == DispatcherKind::kAllToAll) {
    plan_all_to_all(counts_E, plan);
  } else {
    plan_all_gather(counts_E, plan);
  }
  plan.expert_rows = plan.expert_chunk_rows[chunks_];
  return plan;
}

DispatchPlan TokenDispatcher::plan_known(std::span<const int64_t> counts_V, int64_t per_rank,
                                         std::span<const int64_t> received) const {
  const int EP = groups_.ep->size();
  MOEFOLD_CHECK(kind_ == DispatcherKind::kAllToAll && groups_.etp->size() == 1);
  MOEFOLD_CHECK(static_cast<int64_t>(counts_V.size()) == EP * per_rank &&
                static_cast<int64_t>(received.size()) == EP * per_rank);
  DispatchPlan plan = plan_source(counts_V, per_rank);
  plan_all_to_all(counts_V, plan, received);
  plan.expert_rows = plan.expert_chunk_rows[chunks_];
  return plan;
}

// Source side of a plan over counts_E.size() targets, `per_rank` per EP rank.
DispatchPlan TokenDispatcher::plan_source(std::span<const int64_t> counts_E,
                                          int64_t per_rank) const {
  const int64_t E = static_cast<int64_t>(counts_E.size());
  const int EP = groups_.ep->size(), n = chunks_;
  DispatchPlan plan;
  plan.kind = kind_;
  plan.chunks = n;
  plan.local_experts = per_rank;
  const int64_t El = plan.local_experts;
  std::vector<int64_t> start(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) start[e + 1] = start[e] + counts_E[e];
  plan.source_rows = start[E];
  // Source order (chunk, global expert): chunk j takes an even share of every expert's rows.
  plan.source_chunk_rows.assign(n + 1, 0);
  plan.send_rows.assign(static_cast<size_t>(n) * EP, 0);
  plan.source_order.reserve(plan.source_rows);
  for (int j = 0; j < n; ++j) {
    for (int64_t e = 0; e < E; ++e) {
      const int64_t first = start[e] + counts_E[e] * j / n, rows = chunk_share(counts_E[e], j, n);
      for (int64_t r = 0; r < rows; ++r) plan.source_order.push_back(first + r);
      plan.send_rows[j * EP + e / El] += rows;
    }
    plan.source_chunk_rows[j + 1] = plan.source_order.size();
  }
  plan.expert_chunk_rows.assign(n + 1, 0);
  plan.expert_run_chunks.assign(n + 1, 0);
  plan.expert_offsets.assign(static_cast<size_t>(n) * (El + 1), 0);
  plan.gathered_chunk_rows.assign(n + 1, 0);
  return plan;
}

void TokenDispatcher::plan_all_to_all(std::span<const int64_t> counts_E, DispatchPlan& plan,
                                      std::span<const int64_t> known) const {
  const int EP = groups_.ep->size(), ETP = groups_.etp->size(), n = chunks_;
  const int64_t El = plan.local_experts;
  // received[s][i]: rows EP rank s routed to our local expert i.
  std::vector<int64_t> received(known.begin(), known.end());
  if (known.empty()) {
    received.resize(EP * El);
    groups_.ep->all_to_all(counts_E.data(), received.data(), El, CommDType::kInt64);
  }
  // counts[t][s][i]: the same as seen by each expert tensor-parallel peer t.
  std::vector<int64_t> counts(static_cast<size_t>(ETP) * EP * El);
  groups_.etp->all_gather(received.data(), EP * El, counts.data(), CommDType::kInt64);
  const int me_ep = groups_.ep->rank(), me_etp = groups_.etp->rank();
  plan.gathered_is_exchanged = ETP == 1;
  plan.exchanged_rows.assign(static_cast<size_t>(n) * EP, 0);
  plan.exchanged_chunk_rows.assign(n + 1, 0);
  plan.gathered_rows.assign(static_cast<size_t>(n) * ETP, 0);
  std::vector<Block> blocks;
  for (int j = 0; j < n; ++j) {
    blocks.clear();
    for (int t = 0; t < ETP; ++t) {
      for (int s = 0; s < EP; ++s) {
        for (int64_t i = 0; i < El; ++i) {
          const int64_t rows = chunk_share(counts[(t * EP + s) * El + i], j, n);
          blocks.push_back({rows, i});
          plan.gathered_rows[j * ETP + t] += rows;
          if (t == me_etp) plan.exchanged_rows[j * EP + s] += rows;
        }
      }
    }
    plan.exchanged_chunk_rows[j + 1] =
        plan.exchanged_chunk_rows[j] +
        total(std::span(plan.exchanged_rows).subspan(j * EP, EP));
    plan.gathered_chunk_rows[j + 1] =
        plan.gathered_chunk_rows[j] + total(std::span(plan.gathered_rows).subspan(j * ETP, ETP));
    order_chunk_by_expert(blocks, j, plan);
  }
  for (int j = 0; j < n; ++j) {
    for (int r = 0; r < EP; ++r) {
      if (r == me_ep) continue;
      plan.remote_rows_sent += plan.send_rows[j * EP + r];
      plan.remote_rows_returned += plan.exchanged_rows[j * EP + r];
    }
  }
}

void TokenDispatcher::plan_all_gather(std::span<const int64_t> counts_E, DispatchPlan& plan) const {
  const int64_t E = experts_, El = plan.local_experts;
  const int M = groups_.etp_ep->size(), n = chunks_;
  std::vector<int64_t> counts(static_cast<size_t>(M) * E);  // counts[m][e]
  groups_.etp_ep->all_gather(counts_E.data(), E, counts.data(), CommDType::kInt64);
  const int64_t first_expert = groups_.ep->rank() * El;
  plan.gathered_is_exchanged = false;
  plan.gathered_rows.assign(static_cast<size_t>(n) * M, 0);
  std::vector<Block> blocks;
  for (int j = 0; j < n; ++j) {
    blocks.clear();
    for (int m = 0; m < M; ++m) {
      for (int64_t e = 0; e < E; ++e) {
        const int64_t rows = chunk_share(counts[m * E + e], j, n);
        const bool ours = e >= first_expert && e < first_expert + El;
        blocks.push_back({rows, ours ? e - first_expert : -1});
        plan.gathered_rows[j * M + m] += rows;
      }
    }
    plan.gathered_chunk_rows[j + 1] =
        plan.gathered_chunk_rows[j] + total(std::span(plan.gathered_rows).subspan(j * M, M));
    order_chunk_by_expert(blocks, j, plan);
  }
  plan.remote_rows_sent = plan.source_rows * (M - 1);
  const int me = groups_.etp_ep->rank();
  for (int j = 0; j < n; ++j) {
    for (int m = 0; m < M; ++m) {
      if (m != me) plan.remote_rows_returned += plan.gathered_rows[j * M + m];
    }
  }
}

void TokenDispatcher::start_dispatch(const DispatchPlan& plan, const void* source_RW, int64_t W,
                                     DispatchBuffers& buf) const {
  const Bytes source(source_RW, W, buf.dtype);
  const int n = plan.chunks;
  MOEFOLD_CHECK(n == chunks_);
  buf.dispatch.assign(n, WorkHandle());
  buf.combine.assign(n, WorkHandle());
  const Bytes gathered(ensure_rows(buf.gathered, plan.gathered_chunk_rows[n], W, buf.dtype), W,
                       buf.dtype);
  buf.bytes_sent += (plan.remote_rows_sent + plan.remote_rows_returned) * gathered.row_bytes;
  if (kind_ == DispatcherKind::kAllGather) {
    const int M = groups_.etp_ep->size();
    for (int j = 0; j < n; ++j) {
      const int64_t first = plan.source_chunk_rows[j];
      buf.dispatch[j] = groups_.etp_ep->all_gather_v_async(
          source.row(first), (plan.source_chunk_rows[j + 1] - first) * W,
          gathered.row(plan.gathered_chunk_rows[j]),
          scaled(std::span(plan.gathered_rows).subspan(j * M, M), W), source.wire);
    }
    return;
  }
  const int EP = groups_.ep->size();
  const Bytes exchanged(ensure_rows(buf.exchanged, plan.exchanged_chunk_rows[n], W, buf.dtype),
                        W, buf.dtype);
  for (int j = 0; j < n; ++j) {
    buf.dispatch[j] = groups_.ep->all_to_all_v_async(
        source.row(plan.source_chunk_rows[j]),
        scaled(std::span(plan.send_rows).subspan(j * EP, EP), W),
        exchanged.row(plan.exchanged_chunk_rows[j]),
        scaled(std::span(plan.exchanged_rows).subspan(j * EP, EP), W), source.wire);
  }
}

void TokenDispatcher::finish_dispatch_chunk(const DispatchPlan& plan, int j, int64_t W,
                                            DispatchBuffers& buf, void* expert_ReW) const {
  const Bytes expert(expert_ReW, W, buf.dtype);
  BlockedTimer timer(buf.blocked_seconds);
  buf.dispatch[j].wait();
  if (kind_ == DispatcherKind::kAllToAll && !plan.gathered_is_exchanged) {
    const int ETP = groups_.etp->size();
    const int64_t first = plan.exchanged_chunk_rows[j];
    groups_.etp->all_gather_v(Bytes(buf.exchanged, W).row(first),
                              (plan.exchanged_chunk_rows[j + 1] - first) * W,
                              Bytes(buf.gathered, W).row(plan.gathered_chunk_rows[j]),
                              scaled(std::span(plan.gathered_rows).subspan(j * ETP, ETP), W),
                              expert.wire);
  }
  const Bytes gathered(plan.gathered_is_exchanged ? buf.exchanged : buf.gathered, W);
  const int64_t first = plan.gathered_chunk_rows[j];
  for (int64_t k = plan.expert_run_chunks[j]; k < plan.expert_run_chunks[j + 1]; ++k) {
    const DispatchPlan::RowRun& run = plan.expert_runs[k];
    ops::copy_memory(expert.row(run.expert_row), gathered.row(first + run.gathered_row),
                     static_cast<size_t>(run.rows * expert.row_bytes));
  }
}

void TokenDispatcher::start_combine_chunk(const DispatchPlan& plan, int j, const void* expert_ReW,
                                          int64_t W, void* source_RW,
                                          DispatchBuffers& buf) const {
  const Bytes expert(expert_ReW, W, buf.dtype), source(source_RW, W, buf.dtype);
  Tensor& staging = plan.gathered_is_exchanged ? buf.exchanged : buf.gathered;
  const Bytes staged(staging, W);
  const int64_t first = plan.gathered_chunk_rows[j];
  void* gathered = staged.row(first);
  if (kind_ == DispatcherKind::kAllGather) {  // rows of other ranks' experts add nothing
    staging.elements(first * W, {(plan.gathered_chunk_rows[j + 1] - first) * W}).zero();
  }
  for (int64_t k = plan.expert_run_chunks[j]; k < plan.expert_run_chunks[j + 1]; ++k) {
    const DispatchPlan::RowRun& run = plan.expert_runs[k];
    ops::copy_memory(staged.row(first + run.gathered_row), expert.row(run.expert_row),
                     static_cast<size_t>(run.rows * expert.row_bytes));
  }
  void* source_chunk = source.row(plan.source_chunk_rows[j]);
  if (kind_ == DispatcherKind::kAllGather) {
    const int M = groups_.etp_ep->size();
    buf.combine[j] = groups_.etp_ep->reduce_scatter_v_async(
        gathered, source_chunk, scaled(std::span(plan.gathered_rows).subspan(j * M, M), W),
        expert.wire, ReduceOp::kSum);
    return;
  }
  void* exchanged = Bytes(buf.exchanged, W).row(plan.exchanged_chunk_rows[j]);
  if (!plan.gathered_is_exchanged) {
    BlockedTimer timer(buf.blocked_seconds);
    const int ETP = groups_.etp->size();
    groups_.etp->reduce_scatter_v(gathered, exchanged,
                                  scaled(std::span(plan.gathered_rows).subspan(j * ETP, ETP), W),
                                  expert.wire, ReduceOp::kSum);
  }
  const int EP = groups_.ep->size();
  buf.combine[j] = groups_.ep->all_to_all_v_async(
      exchanged, scaled(std::span(plan.exchanged_rows).subspan(j * EP, EP), W), source_chunk,
      scaled(std::span(plan.send_rows).subspan(j * EP, EP), W), expert.wire);
}

void TokenDispatcher::finish_combine(DispatchBuffers& buf) const {
  BlockedTimer timer(buf.blocked_seconds);
  for (WorkHandle& h : buf.combine) h.wait();
  for (WorkHandle& h : buf.dispatch) h.wait();
}

}  // namespace moefold
