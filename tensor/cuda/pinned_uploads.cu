#include "tensor/cuda/pinned_uploads.h"

#include <cstring>

#include "tensor/cuda/cuda_check.h"

namespace moefold::cuda {

PinnedUploads::~PinnedUploads() {
  for (auto& [ticket, event] : pending_) {
    cudaEventSynchronize(event);
    cudaEventDestroy(event);
  }
  for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
}

bool PinnedUploads::ready() {
  if (pinned_ == nullptr && !unavailable_) {
    if (cudaMallocHost(&pinned_, ring_.capacity()) != cudaSuccess) {
      cudaGetLastError();  // no pinned memory: every copy goes the pageable way
      pinned_ = nullptr;
      unavailable_ = true;
    }
  }
  return pinned_ != nullptr;
}

cudaEvent_t PinnedUploads::take_event() {
  if (!free_events_.empty()) {
    cudaEvent_t event = free_events_.back();
    free_events_.pop_back();
    return event;
  }
  cudaEvent_t event = nullptr;
  MOEFOLD_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

void PinnedUploads::copy(void* dst, const void* host_src, size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<StagingRing::Region> region;
  if (bytes <= ring_.capacity() / 4 && ready()) region = ring_.reserve(bytes);
  if (!region) {
    MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream));
    return;
  }
  // Copies on one stream run in order: once the newest overlapping copy is done, so are the
  // older ones, and their events go back to the pool.
  if (region->wait_for >= 0) {
    while (!pending_.empty() && pending_.front().first <= region->wait_for) {
      const auto [ticket, event] = pending_.front();
      pending_.pop_front();
      if (ticket == region->wait_for) MOEFOLD_CUDA_CHECK(cudaEventSynchronize(event));
      free_events_.push_back(event);
    }
  }
  char* staged = pinned_ + region->offset;
  std::memcpy(staged, host_src, bytes);
  MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, stream));
  cudaEvent_t event = take_event();
  MOEFOLD_CUDA_CHECK(cudaEventRecord(event, stream));
  pending_.emplace_back(next_ticket_, event);
  ring_.commit(next_ticket_++);
}

}  // namespace moefold::cuda
