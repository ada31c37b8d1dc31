#include "parallel/cp_communication.h"

#include <cstring>

#include "tensor/check.h"
#include "tensor/ops.h"
#include "tensor/wall_clock.h"

namespace moefold {
namespace {

constexpr int kKvTag = 1101;
constexpr int kGradientTag = 1102;

// The rows of this rank of `group`, copied between its shard (n,H) and a full (N,H) buffer.
void copy_own_rows(Communicator& group, const std::vector<int64_t>& rows_N, const float* from,
                   float* to, int64_t n, int64_t H, bool to_full) {
  MOEFOLD_CHECK(static_cast<int64_t>(rows_N.size()) == n * group.size());
  const int64_t first = group.rank() * n;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = rows_N[first + i];
    if (to_full) {
      ops::copy_memory(to + row * H, from + i * H, H * sizeof(float));
    } else {
      ops::copy_memory(to + i * H, from + row * H, H * sizeof(float));
    }
  }
}

// full (N,H) = every rank's shard (n,H) placed at its rows.
void gather_rows(Communicator& group, const std::vector<int64_t>& rows_N, const float* shard,
                 float* full, int64_t n, int64_t H, Tensor& scratch) {
  const int64_t N = n * group.size();
  MOEFOLD_CHECK(static_cast<int64_t>(rows_N.size()) == N);
  if (!scratch.defined() || scratch.numel() != N * H) scratch = Tensor::empty({N, H});
  group.all_gather(shard, n * H, scratch.data(), CommDType::kFloat32);
  const float* concatenated = scratch.data();
  for (int64_t i = 0; i < N; ++i) {
    ops::copy_memory(full + rows_N[i] * H, concatenated + i * H, H * sizeof(float));
  }
}

}  // namespace

CpCommunicationStats& cp_communication_stats() {
  static CpCommunicationStats stats;
  return stats;
}

KvRing::KvRing(Communicator& cp, bool overlap) : cp_(cp), overlap_(overlap) {}

void KvRing::wait(WorkHandle& handle) {
  const auto start = std::chrono::steady_clock::now();
  handle.wait();
  cp_communication_stats().wait_seconds += seconds_since(start);
}

void KvRing::start_pass(const void* block, void* incoming, int64_t count, CommDType dtype) {
  recv_ = cp_.recv_async(incoming, count, dtype, prev(), kKvTag);
  send_ = cp_.send_async(block, count, dtype, next(), kKvTag);
  cp_communication_stats().bytes_sent += count * static_cast<int64_t>(comm_dtype_size(dtype));
  if (!overlap_) finish_pass();
}

void KvRing::finish_pass() {
  wait(send_);
  wait(recv_);
}

void KvRing::start_gradient_receive(float* incoming, int64_t count) {
  grad_recv_ = cp_.recv_async(incoming, count, CommDType::kFloat32, prev(), kGradientTag);
}

void KvRing::finish_gradient_receive() { wait(grad_recv_); }

void KvRing::send_gradient(const float* partial, int64_t count) {
  grad_sends_.push_back(cp_.send_async(partial, count, CommDType::kFloat32, next(), kGradientTag));
  cp_communication_stats().bytes_sent += count * static_cast<int64_t>(sizeof(float));
  if (!overlap_) {
    finish_gradient_sends();
    finish_gradient_receive();
  }
}

void KvRing::finish_gradient_sends() {
  for (WorkHandle& handle : grad_sends_) wait(handle);
  grad_sends_.clear();
}

// all-gather ↔ split
void gather_context_sequence_forward(Communicator& group, const std::vector<int64_t>& rows_N,
                                     const float* x_shard, float* x_full, int64_t n, int64_t H,
                                     Tensor& scratch) {
  gather_rows(group, rows_N, x_shard, x_full, n, H, scratch);
}
void gather_context_sequence_backward(Communicator& group, const std::vector<int64_t>& rows_N,
                                      const float* dx_full, float* dx_shard, int64_t n,
                                      int64_t H) {
  copy_own_rows(group, rows_N, dx_full, dx_shard, n, H, false);
}

// split ↔ all-gather
void split_context_sequence_forward(Communicator& group, const std::vector<int64_t>& rows_N,
                                    const float* y_full, float* y_shard, int64_t n, int64_t H) {
  copy_own_rows(group, rows_N, y_full, y_shard, n, H, false);
}
void split_context_sequence_backward(Communicator& group, const std::vector<int64_t>& rows_N,
                                     const float* dy_shard, float* dy_full, int64_t n, int64_t H,
                                     Tensor& scratch) {
  gather_rows(group, rows_N, dy_shard, dy_full, n, H, scratch);
}

}  // namespace moefold
