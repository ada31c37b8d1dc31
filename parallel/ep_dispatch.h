// Expert-parallel token dispatch ↔ combine (STYLE.md 6): the communication that carries the rows
// of routed (token, expert) assignments from the rank that routed them to the ranks that own the
// expert, and the expert outputs (or input gradients) back. Dispatch and combine are adjoint: the
// forward pass dispatches x and combines y, the backward pass dispatches dy and combines dx.
//
// Dispatchers (MoE Parallel Folding, experts over ETP × EP):
// - kAllToAll: all-to-all-v over EP, then all-gather-v over ETP when ETP > 1; combine is the
//   reduce-scatter-v over ETP followed by the reverse all-to-all-v.
// - kAllGather: all-gather-v over ETP×EP; each rank picks its own experts' rows; combine is the
//   reduce-scatter-v over ETP×EP (rows of other ranks' experts contribute zeros).
//
// Local work is kept apart from communication (STYLE.md 7): plan_dispatch exchanges the counts
// and computes every order; the exchange functions only move rows and reorder them by the plan.
// Rows are split into `chunks` so that the exchange of chunk i+1 is in flight while the experts
// compute chunk i. Every rank takes part in every collective, whatever its counts (zero rows
// included), so unbalanced routing can never hang.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

enum class DispatcherKind { kAllToAll, kAllGather };

// The rank groups of the expert side a dispatcher uses (members in layout order; the EP rank of
// a member is its rank in `ep`, and global expert id = ep_rank · E/EP + local expert).
struct DispatchGroups {
  Communicator* ep = nullptr;
  Communicator* etp = nullptr;
  Communicator* etp_ep = nullptr;  // kAllGather only
};

// The metadata of one dispatch, computed once per micro-batch and shared by the forward and the
// backward exchanges. Source side: this rank's rows, sorted by global expert, are sent in the
// order (chunk, global expert), i.e. (chunk, destination EP rank, local expert). Expert side:
// each chunk's rows arrive as a "gathered" buffer (blocks per source) and are reordered by local
// expert for the grouped GEMMs.
struct DispatchPlan {
  DispatcherKind kind = DispatcherKind::kAllToAll;
  int chunks = 1;
  int64_t local_experts = 0;  // El = E / EP
  // Source side.
  int64_t source_rows = 0;                  // R rows this rank routed (kept assignments)
  std::vector<int32_t> source_order;        // (R) send row → row of the expert-sorted order
  std::vector<int64_t> source_chunk_rows;   // (chunks+1) row offsets of each chunk
  std::vector<int64_t> send_rows;           // (chunks, EP) all-to-all rows to each EP rank
  // Expert side.
  int64_t expert_rows = 0;                  // Re rows this rank's experts compute
  std::vector<int64_t> expert_chunk_rows;   // (chunks+1) row offsets of each chunk
  std::vector<int64_t> expert_offsets;      // (chunks, El+1) per-chunk offsets of each expert
  std::vector<int64_t> exchanged_rows;      // (chunks, EP) all-to-all rows from each EP rank
  std::vector<int64_t> exchanged_chunk_rows;  // (chunks+1) row offsets in the exchanged buffer
  std::vector<int64_t> gathered_rows;       // (chunks, members) all-gather-v rows per member
  std::vector<int64_t> gathered_chunk_rows;   // (chunks+1) row offsets in the gathered buffer
  // The expert buffer's rows as runs of consecutive rows of each chunk's gathered block: the
  // dispatch copies them in and the combine back, one copy per run (a device copy each), not
  // per row. Runs that continue each other are one run.
  struct RowRun {
    int64_t expert_row;    // first row in the expert buffer
    int64_t gathered_row;  // first row in its chunk's gathered block
    int64_t rows;
  };
  std::vector<RowRun> expert_runs;          // chunk after chunk, in expert-row order
  std::vector<int64_t> expert_run_chunks;   // (chunks+1) offsets of each chunk's runs
  bool gathered_is_exchanged = true;        // all-to-all with ETP = 1: no gather step
  // Rows this rank sends to other ranks in a dispatch, and in the combine that mirrors it.
  int64_t remote_rows_sent = 0;
  int64_t remote_rows_returned = 0;

  const int64_t* chunk_expert_offsets(int chunk) const {
    return expert_offsets.data() + chunk * (local_experts + 1);
  }
};

// Buffers and handles of exchanges in flight; owned by the caller's per-micro-batch stash. They
// must stay alive until finish_combine returns.
struct DispatchBuffers {
  DType dtype = DType::kFloat32;  // of the rows passed in and out (the activations')
  Tensor exchanged;  // (Σ exchanged rows, width) all-to-all side
  Tensor gathered;   // (Σ gathered rows, width) after the ETP / ETP×EP gather
  std::vector<WorkHandle> dispatch;  // one per chunk
  std::vector<WorkHandle> combine;   // one per chunk
  // Accumulated over calls (the caller resets them): seconds the calling thread spent blocked
  // in communication, and bytes this rank sent to other ranks (dispatch and combine).
  double blocked_seconds = 0;
  int64_t bytes_sent = 0;
};

class TokenDispatcher {
 public:
  TokenDispatcher(DispatchGroups groups, DispatcherKind kind, int64_t num_experts, int chunks);

  // Exchanges this rank's rows per global expert, counts_E (E), and computes every order.
  // Collective over the dispatcher's groups: every rank calls it once per micro-batch.
  DispatchPlan plan(std::span<const int64_t> counts_E) const;
  // The same over `slots_per_rank` dispatch targets per EP rank instead of the experts (FSSDP
  // replicas, model/moe_replicas.h), when the rows each EP rank sends to this rank's targets,
  // received_PS (EP, slots_per_rank), are already known: no counts exchange. all-to-all, ETP 1.
  DispatchPlan plan_known(std::span<const int64_t> counts_V, int64_t slots_per_rank,
                          std::span<const int64_t> received_PS) const;

  // Starts the exchange of every chunk of source (R, width) towards the experts.
  void start_dispatch(const DispatchPlan& plan, const void* source_RW, int64_t width,
                      DispatchBuffers& buffers) const;
  // Waits for chunk `chunk` and writes its rows, ordered by local expert, into
  // expert (Re, width) at rows [expert_chunk_rows[chunk], expert_chunk_rows[chunk+1]).
  void finish_dispatch_chunk(const DispatchPlan& plan, int chunk, int64_t width,
                             DispatchBuffers& buffers, void* expert_ReW) const;
  // Starts sending chunk `chunk` of expert (Re, width) back; the source rows of that chunk in
  // source (R, width) receive the sum over the expert tensor-parallel ranks.
  void start_combine_chunk(const DispatchPlan& plan, int chunk, const void* expert_ReW,
                           int64_t width, void* source_RW, DispatchBuffers& buffers) const;
  // Waits until every chunk is back in source.
  void finish_combine(DispatchBuffers& buffers) const;

  int chunks() const { return chunks_; }

 private:
  DispatchPlan plan_source(std::span<const int64_t> counts_V, int64_t per_rank) const;
  void plan_all_to_all(std::span<const int64_t> counts_E, DispatchPlan& plan,
                       std::span<const int64_t> received = {}) const;
  void plan_all_gather(std::span<const int64_t> counts_E, DispatchPlan& plan) const;

  DispatchGroups groups_;
  DispatcherKind kind_;
  int64_t experts_;
  int chunks_;
};

// Rows of a segment of `count` rows that fall into chunk `chunk` of `chunks` (even split).
inline int64_t chunk_share(int64_t count, int chunk, int chunks) {
  return count * (chunk + 1) / chunks - count * chunk / chunks;
}

}  // namespace moefold
