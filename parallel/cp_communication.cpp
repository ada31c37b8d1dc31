#include "parallel/cp_communication.h"

#include "tensor/wall_clock.h"

namespace moefold {
namespace {

constexpr int kKvTag = 1101;
constexpr int kGradientTag = 1102;

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

}  // namespace moefold
