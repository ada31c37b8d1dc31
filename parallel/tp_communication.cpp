#include "parallel/tp_communication.h"

#include <vector>

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

void copy_elements(const void* from, void* to, int64_t count, CommDType dtype) {
  if (from != to && count > 0) ops::copy_memory(to, from, count * comm_dtype_size(dtype));
}

Tensor& ensure_rows(Tensor& t, int64_t rows, int64_t cols, DType dtype) {
  const std::vector<int64_t> shape = {rows, cols};
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype) t = Tensor::empty(shape, dtype);
  return t;
}

CommDType wire(const Tensor& t) { return comm_dtype_of(t.dtype()); }

// The address of element `offset` of t.
void* at(const Tensor& t, int64_t offset) {
  return static_cast<char*>(t.raw_data()) + offset * static_cast<int64_t>(dtype_size(t.dtype()));
}

// out = (accumulate ? out : 0) + a reduced result: after a reduce-scatter (scattered) it is in
// `shard`, which is out itself unless accumulating; otherwise it is the whole `full`.
void deliver(bool scattered, const Tensor& shard, const Tensor& full, const Tensor& out,
             bool accumulate) {
  if (scattered) {
    if (accumulate) ops::add(out, shard);
  } else if (accumulate) {
    ops::add(out, full);
  } else {
    ops::copy(out, full.numel() == out.numel() ? full : full.elements(0, out.shape()));
  }
}

}  // namespace

TpCommunicationStats& tp_communication_stats() {
  static TpCommunicationStats stats;
  return stats;
}

TimedTpCollective::~TimedTpCollective() {
  TpCommunicationStats& stats = tp_communication_stats();
  stats.seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  ++stats.collectives;
}

// copy ↔ all-reduce
void copy_to_tp_region_forward(const void* x, void* y, int64_t count, CommDType dtype) {
  copy_elements(x, y, count, dtype);
}
void copy_to_tp_region_backward(Communicator& tp, void* dx, int64_t count, CommDType dtype) {
  if (tp.size() == 1) return;
  TimedTpCollective timed;
  tp.all_reduce(dx, count, dtype, ReduceOp::kSum);
}

// all-reduce ↔ copy
void reduce_from_tp_region_forward(Communicator& tp, void* y, int64_t count, CommDType dtype) {
  if (tp.size() == 1) return;
  TimedTpCollective timed;
  tp.all_reduce(y, count, dtype, ReduceOp::kSum);
}
void reduce_from_tp_region_backward(const void* dy, void* dx, int64_t count, CommDType dtype) {
  copy_elements(dy, dx, count, dtype);
}

// all-gather ↔ reduce-scatter
void gather_from_sequence_region_forward(Communicator& tp, const void* x_shard, void* x_full,
                                         int64_t shard_count, CommDType dtype) {
  if (tp.size() == 1) return copy_elements(x_shard, x_full, shard_count, dtype);
  TimedTpCollective timed;
  tp.all_gather(x_shard, shard_count, x_full, dtype);
}
void gather_from_sequence_region_backward(Communicator& tp, const void* dx_full, void* dx_shard,
                                          int64_t shard_count, CommDType dtype) {
  if (tp.size() == 1) return copy_elements(dx_full, dx_shard, shard_count, dtype);
  TimedTpCollective timed;
  tp.reduce_scatter(dx_full, dx_shard, shard_count, dtype, ReduceOp::kSum);
}

// reduce-scatter ↔ all-gather
void reduce_scatter_to_sequence_forward(Communicator& tp, const void* y_full, void* y_shard,
                                        int64_t shard_count, CommDType dtype) {
  gather_from_sequence_region_backward(tp, y_full, y_shard, shard_count, dtype);
}
void reduce_scatter_to_sequence_backward(Communicator& tp, const void* dy_shard, void* dy_full,
                                         int64_t shard_count, CommDType dtype) {
  gather_from_sequence_region_forward(tp, dy_shard, dy_full, shard_count, dtype);
}

void TpRegion::enter_forward(const Tensor& x, int64_t N, Tensor& x_full) const {
  if (!sharded()) {
    MOEFOLD_CHECK(x.dim(0) == N);
    x_full = x;  // copy_to_tp_region: the same tokens on every rank, no data moves
    return;
  }
  const int64_t H = x.dim(1);
  MOEFOLD_CHECK(x.dim(0) * size() == N);
  if (x_full.defined() && x_full.raw_data() == x.raw_data()) x_full = Tensor();
  ensure_rows(x_full, N, H, x.dtype());
  gather_from_sequence_region_forward(*tp, x.raw_data(), x_full.raw_data(), x.numel(), wire(x));
}

void TpRegion::enter_backward(Tensor& dx_full, Tensor& dx, bool accumulate, Tensor& scratch,
                              const std::function<void()>& overlap) const {
  const int64_t rows = dx.dim(0), H = dx.dim(1);
  if (!active()) {
    if (overlap) overlap();
    deliver(false, dx, dx_full, dx, accumulate);
    return;
  }
  Tensor& target =
      accumulate && sequence_parallel ? ensure_rows(scratch, rows, H, dx.dtype()) : dx;
  MOEFOLD_CHECK(dx_full.dtype() == target.dtype(), "TP reduction between dtypes");
  WorkHandle reduction =
      sequence_parallel
          ? tp->reduce_scatter_async(dx_full.raw_data(), target.raw_data(), dx.numel(),
                                     wire(dx_full), ReduceOp::kSum)
          : tp->all_reduce_async(dx_full.raw_data(), dx_full.numel(), wire(dx_full),
                                 ReduceOp::kSum);
  if (overlap) overlap();
  {
    TimedTpCollective timed;
    reduction.wait();
  }
  deliver(sequence_parallel, target, dx_full, dx, accumulate);
}

void TpRegion::exit_forward(Tensor& y_full, Tensor& y, bool accumulate, Tensor& scratch) const {
  const int64_t rows = y.dim(0), H = y.dim(1);
  if (sharded()) {
    Tensor& target = accumulate ? ensure_rows(scratch, rows, H, y.dtype()) : y;
    reduce_scatter_to_sequence_forward(*tp, y_full.raw_data(), target.raw_data(), y.numel(),
                                       wire(y_full));
    deliver(true, target, y_full, y, accumulate);
    return;
  }
  if (active()) {
    reduce_from_tp_region_forward(*tp, y_full.raw_data(), y_full.numel(), wire(y_full));
  }
  deliver(false, y, y_full, y, accumulate);
}

void TpRegion::exit_forward_overlapped(int64_t N, const PartialRows& compute, Tensor& y_full,
                                       Tensor& y, bool accumulate, Tensor& scratch) const {
  const int64_t rows = y.dim(0), H = y.dim(1);
  ensure_rows(y_full, N, H, y.dtype());
  const int64_t K = overlap_chunks;
  if (!active() || K <= 1 || rows % K != 0) {
    compute(0, N, y_full);
    exit_forward(y_full, y, accumulate, scratch);
    return;
  }
  std::vector<WorkHandle> reductions;
  const int64_t sub = rows / K;  // rows of one chunk per output segment
  Tensor& target =
      accumulate && sequence_parallel ? ensure_rows(scratch, rows, H, y.dtype()) : y;
  for (int64_t c = 0; c < K; ++c) {
    if (!sequence_parallel) {
      const Tensor block = y_full.slice_rows(c * sub, (c + 1) * sub);
      compute(c * sub, sub, block);
      reductions.push_back(
          tp->all_reduce_async(block.raw_data(), sub * H, wire(block), ReduceOp::kSum));
      continue;
    }
    // Chunk c of every rank's row segment, packed rank after rank, then reduce-scattered.
    const int P = size();
    const int64_t block = c * P * sub;
    for (int r = 0; r < P; ++r) {
      compute(r * rows + c * sub, sub, y_full.slice_rows(block + r * sub, block + (r + 1) * sub));
    }
    reductions.push_back(tp->reduce_scatter_async(at(y_full, block * H), at(target, c * sub * H),
                                                  sub * H, wire(y_full), ReduceOp::kSum));
  }
  {
    TimedTpCollective timed;
    for (WorkHandle& reduction : reductions) reduction.wait();
  }
  deliver(sequence_parallel, target, y_full, y, accumulate);
}

void TpRegion::exit_backward(const Tensor& dy, int64_t N, Tensor& dy_full) const {
  if (!sharded()) {
    MOEFOLD_CHECK(dy.dim(0) == N);
    dy_full = dy;  // reduce_from_tp_region backward: the whole gradient, no data moves
    return;
  }
  if (dy_full.defined() && dy_full.raw_data() == dy.raw_data()) dy_full = Tensor();
  ensure_rows(dy_full, N, dy.dim(1), dy.dtype());
  reduce_scatter_to_sequence_backward(*tp, dy.raw_data(), dy_full.raw_data(), dy.numel(),
                                      wire(dy));
}

}  // namespace moefold
