// Tensor- and sequence-parallel communication (STYLE.md 6): each forward operation is named
// together with its backward, over the TP communicator. Buffers are float32, row-major, tokens
// along the first axis; with sequence parallelism rank r of TP holds the token rows
// [r·n, (r+1)·n) of the N = TP·n rows of a micro-batch. With one TP rank every pair is the
// identity (copies only where source and destination differ).
//
//   forward                         backward
//   copy_to_tp_region            ↔  all-reduce            (enter a column-parallel layer)
//   reduce_from_tp_region        ↔  copy                  (leave a row-parallel layer)
//   gather_from_sequence_region  ↔  reduce-scatter        (enter, sequence parallel)
//   reduce_scatter_to_sequence   ↔  all-gather            (leave, sequence parallel)
//
// TpRegion packages the first four for a layer whose input and output live in the residual
// stream's layout (token shard under sequence parallelism, all tokens otherwise).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

// Running totals of this process's TP collectives (wall time the caller was blocked in them,
// count), for measuring the share of a step spent in TP communication. A counter only: nothing
// reads it to decide anything.
struct TpCommunicationStats {
  double seconds = 0;
  int64_t collectives = 0;
};
TpCommunicationStats& tp_communication_stats();

// Adds the lifetime of the object to tp_communication_stats() as one collective.
class TimedTpCollective {
 public:
  TimedTpCollective() : start_(std::chrono::steady_clock::now()) {}
  ~TimedTpCollective();
  TimedTpCollective(const TimedTpCollective&) = delete;
  TimedTpCollective& operator=(const TimedTpCollective&) = delete;

 private:
  std::chrono::steady_clock::time_point start_;
};

// Buffers of `count` elements of `dtype` (the activations': bf16 under mixed precision).
inline constexpr CommDType kF32 = CommDType::kFloat32;

// copy ↔ all-reduce. Forward: y = x (every rank consumes the same x). Backward: each rank's
// dx is a partial sum over its slice of the layer; dx becomes the sum over TP, in place.
void copy_to_tp_region_forward(const void* x, void* y, int64_t count, CommDType dtype = kF32);
void copy_to_tp_region_backward(Communicator& tp, void* dx, int64_t count,
                                CommDType dtype = kF32);

// all-reduce ↔ copy. Forward: y (partial per rank) becomes the sum over TP, in place.
// Backward: dx = dy (every rank already holds the whole gradient).
void reduce_from_tp_region_forward(Communicator& tp, void* y, int64_t count,
                                   CommDType dtype = kF32);
void reduce_from_tp_region_backward(const void* dy, void* dx, int64_t count,
                                    CommDType dtype = kF32);

// all-gather ↔ reduce-scatter along tokens. Forward: x_full (TP·shard) = the shards of every
// rank in rank order. Backward: dx_shard (shard) = this rank's segment of Σ over TP of dx_full.
void gather_from_sequence_region_forward(Communicator& tp, const void* x_shard, void* x_full,
                                         int64_t shard_count, CommDType dtype = kF32);
void gather_from_sequence_region_backward(Communicator& tp, const void* dx_full, void* dx_shard,
                                          int64_t shard_count, CommDType dtype = kF32);

// reduce-scatter ↔ all-gather along tokens. Forward: y_shard = this rank's segment of the sum
// over TP of the partial y_full. Backward: dy_full = all-gather of dy_shard.
void reduce_scatter_to_sequence_forward(Communicator& tp, const void* y_full, void* y_shard,
                                        int64_t shard_count, CommDType dtype = kF32);
void reduce_scatter_to_sequence_backward(Communicator& tp, const void* dy_shard, void* dy_full,
                                         int64_t shard_count, CommDType dtype = kF32);

// The entry and exit of a tensor-parallel block (column-parallel in, row-parallel out) whose
// input and output are in the residual stream's layout: n = N/TP token rows per rank with
// sequence parallelism, all N rows otherwise. `tp` null means one rank.
struct TpRegion {
  Communicator* tp = nullptr;
  bool sequence_parallel = false;  // only meaningful with more than one TP rank
  int overlap_chunks = 1;  // row chunks of exit_forward_overlapped (parallel.tp_comm_overlap_chunks)

  int size() const { return tp ? tp->size() : 1; }
  bool active() const { return size() > 1; }
  bool sharded() const { return active() && sequence_parallel; }
  // The group a residual norm's weight gradient is summed over: TP under sequence parallelism.
  Communicator* sequence_group() const { return sharded() ? tp : nullptr; }
  // Token rows of the residual layout for a micro-batch of N tokens.
  int64_t local_rows(int64_t N) const { return sharded() ? N / size() : N; }

  // Entry: x_full (N,H) from x (local_rows,H). Without sequence parallelism x_full shares x's
  // storage; otherwise it is gathered into x_full's buffer (allocated when needed).
  void enter_forward(const Tensor& x, int64_t N, Tensor& x_full) const;
  // Entry backward: dx (local_rows,H) = (accumulate ? dx : 0) + the TP sum of the partial
  // dx_full (N,H) (restricted to this rank's rows under sequence parallelism). dx_full is
  // clobbered; `scratch` holds a shard when accumulating. `overlap` (the layer's weight
  // gradients) runs while the reduction is in flight.
  void enter_backward(Tensor& dx_full, Tensor& dx, bool accumulate, Tensor& scratch,
                      const std::function<void()>& overlap = nullptr) const;
  // Exit: y (local_rows,H) = (accumulate ? y : 0) + the TP sum of the partial y_full (N,H)
  // (this rank's rows under sequence parallelism). y_full is clobbered.
  void exit_forward(Tensor& y_full, Tensor& y, bool accumulate, Tensor& scratch) const;
  // The same exit with the partial computed here, in overlap_chunks row chunks (when they divide
  // the rows; else one): compute(first_row, rows, out) writes rows [first_row, first_row + rows)
  // of the partial (N,H) to out (a (rows,H) view of y_full), and each chunk's all-reduce (reduce-scatter under sequence
  // parallelism) is in flight while the next chunk is computed. y_full is the buffer.
  using PartialRows = std::function<void(int64_t first_row, int64_t rows, const Tensor& out)>;
  void exit_forward_overlapped(int64_t N, const PartialRows& compute, Tensor& y_full, Tensor& y,
                               bool accumulate, Tensor& scratch) const;
  // Exit backward: dy_full (N,H) from dy (local_rows,H): shares dy's storage without sequence
  // parallelism, all-gathered otherwise.
  void exit_backward(const Tensor& dy, int64_t N, Tensor& dy_full) const;
};

}  // namespace moefold
