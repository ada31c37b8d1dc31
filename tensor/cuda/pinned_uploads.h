// Host→device copies through a ring of pinned host memory (tensor/staging_ring.h): the host
// array is copied into the ring and the device copy is queued from there, so the call returns at
// once without the stream synchronisation a copy from pageable memory may cost. Arrays larger
// than a quarter of the ring, or any array when pinned memory cannot be had, are copied
// directly from pageable memory. Thread-safe: MPI's progress thread uploads staged receives.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "tensor/staging_ring.h"

namespace moefold::cuda {

class PinnedUploads {
 public:
  explicit PinnedUploads(size_t capacity) : ring_(capacity) {}
  ~PinnedUploads();
  PinnedUploads(const PinnedUploads&) = delete;
  PinnedUploads& operator=(const PinnedUploads&) = delete;

  // Queues dst ← host_src (bytes) on `stream`; host_src may be reused when this returns.
  void copy(void* dst, const void* host_src, size_t bytes, cudaStream_t stream);

 private:
  bool ready();  // allocates the ring's pinned memory on first use; false when it cannot
  cudaEvent_t take_event();

  std::mutex mutex_;
  StagingRing ring_;
  char* pinned_ = nullptr;
  bool unavailable_ = false;
  int64_t next_ticket_ = 0;
  std::deque<std::pair<int64_t, cudaEvent_t>> pending_;  // ticket → event, oldest first
  std::vector<cudaEvent_t> free_events_;
};

}  // namespace moefold::cuda
