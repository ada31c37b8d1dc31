#include "parallel/tp_communication.h"

#include <vector>

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

void copy_floats(const float* from, float* to, int64_t count) {
  if (from != to && count > 0) ops::copy_memory(to, from, static_cast<size_t>(count) * sizeof(float));
}

Tensor& ensure_rows(Tensor& t, int64_t rows, int64_t cols) {
  const std::vector<int64_t> shape = {rows, cols};
  if (!t.defined() || t.shape() != shape) t = Tensor::empty(shape);
  return t;
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
    copy_floats(full.data(), out.data(), out.numel());
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
void copy_to_tp_region_forward(const float* x, float* y, int64_t count) {
  copy_floats(x, y, count);
}
void copy_to_tp_region_backward(Communicator& tp, float* dx, int64_t count) {
  if (tp.size() == 1) return;
  TimedTpCollective timed;
  tp.all_reduce(dx, count, CommDType::kFloat32, ReduceOp::kSum);
}

// all-reduce ↔ copy
void reduce_from_tp_region_forward(Communicator& tp, float* y, int64_t count) {
  if (tp.size() == 1) return;
  TimedTpCollective timed;
  tp.all_reduce(y, count, CommDType::kFloat32, ReduceOp::kSum);
}
void reduce_from_tp_region_backward(const float* dy, float* dx, int64_t count) {
  copy_floats(dy, dx, count);
}

// all-gather ↔ reduce-scatter
void gather_from_sequence_region_forward(Communicator& tp, const float* x_shard, float* x_full,
                                         int64_t shard_count) {
  if (tp.size() == 1) return copy_floats(x_shard, x_full, shard_count);
  TimedTpCollective timed;
  tp.all_gather(x_shard, shard_count, x_full, CommDType::kFloat32);
}
void gather_from_sequence_region_backward(Communicator& tp, const float* dx_full, float* dx_shard,
                                          int64_t shard_count) {
  if (tp.size() == 1) return copy_floats(dx_full, dx_shard, shard_count);
  TimedTpCollective timed;
  tp.reduce_scatter(dx_full, dx_shard, shard_count, CommDType::kFloat32, ReduceOp::kSum);
}

// reduce-scatter ↔ all-gather
void reduce_scatter_to_sequence_forward(Communicator& tp, const float* y_full, float* y_shard,
                                        int64_t shard_count) {
  gather_from_sequence_region_backward(tp, y_full, y_shard, shard_count);
}
void reduce_scatter_to_sequence_backward(Communicator& tp, const float* dy_shard, float* dy_full,
                                         int64_t shard_count) {
  gather_from_sequence_region_forward(tp, dy_shard, dy_full, shard_count);
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
  ensure_rows(x_full, N, H);
  gather_from_sequence_region_forward(*tp, x.data(), x_full.data(), x.numel());
}

void TpRegion::enter_backward(Tensor& dx_full, Tensor& dx, bool accumulate, Tensor& scratch,
                              const std::function<void()>& overlap) const {
  const int64_t rows = dx.dim(0), H = dx.dim(1);
  if (!active()) {
    if (overlap) overlap();
    deliver(false, dx, dx_full, dx, accumulate);
    return;
  }
  Tensor& target = accumulate && sequence_parallel ? ensure_rows(scratch, rows, H) : dx;
  WorkHandle reduction =
      sequence_parallel
          ? tp->reduce_scatter_async(dx_full.data(), target.data(), dx.numel(),
                                     CommDType::kFloat32, ReduceOp::kSum)
          : tp->all_reduce_async(dx_full.data(), dx_full.numel(), CommDType::kFloat32,
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
    Tensor& target = accumulate ? ensure_rows(scratch, rows, H) : y;
    reduce_scatter_to_sequence_forward(*tp, y_full.data(), target.data(), y.numel());
    deliver(true, target, y_full, y, accumulate);
    return;
  }
  if (active()) reduce_from_tp_region_forward(*tp, y_full.data(), y_full.numel());
  deliver(false, y, y_full, y, accumulate);
}

void TpRegion::exit_forward_overlapped(int64_t N, const PartialRows& compute, Tensor& y_full,
                                       Tensor& y, bool accumulate, Tensor& scratch) const {
  const int64_t rows = y.dim(0), H = y.dim(1);
  ensure_rows(y_full, N, H);
  const int64_t K = overlap_chunks;
  if (!active() || K <= 1 || rows % K != 0) {
    compute(0, N, y_full);
    exit_forward(y_full, y, accumulate, scratch);
    return;
  }
  std::vector<WorkHandle> reductions;
  const int64_t sub = rows / K;  // rows of one chunk per output segment
  Tensor& target = accumulate && sequence_parallel ? ensure_rows(scratch, rows, H) : y;
  for (int64_t c = 0; c < K; ++c) {
    if (!sequence_parallel) {
      const Tensor block = y_full.slice_rows(c * sub, (c + 1) * sub);
      compute(c * sub, sub, block);
      reductions.push_back(
          tp->all_reduce_async(block.data(), sub * H, CommDType::kFloat32, ReduceOp::kSum));
      continue;
    }
    // Chunk c of every rank's row segment, packed rank after rank, then reduce-scattered.
    const int P = size();
    const int64_t block = c * P * sub;
    for (int r = 0; r < P; ++r) {
      compute(r * rows + c * sub, sub, y_full.slice_rows(block + r * sub, block + (r + 1) * sub));
    }
    reductions.push_back(tp->reduce_scatter_async(y_full.data() + block * H,
                                                  target.data() + c * sub * H, sub * H,
                                                  CommDType::kFloat32, ReduceOp::kSum));
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
  ensure_rows(dy_full, N, dy.dim(1));
  reduce_scatter_to_sequence_backward(*tp, dy.data(), dy_full.data(), dy.numel());
}

}  // namespace moefold
