// Device→host copies started on the stream and finished later (Backend::start_copy_to_host).
// A copy into pageable memory returns only once it is done, so each copy lands in a pinned
// buffer first, taken from a pool (sizes repeat from step to step, so the pool stops growing),
// and finish() waits for the copy's event and moves the bytes to their destination. Without
// pinned memory the copy is made at once. Thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "tensor/backend.h"

namespace moefold::cuda {

class PinnedDownloads {
 public:
  PinnedDownloads() = default;
  ~PinnedDownloads();
  PinnedDownloads(const PinnedDownloads&) = delete;
  PinnedDownloads& operator=(const PinnedDownloads&) = delete;

  // Queues host_dst ← src (bytes) on `stream`; host_dst holds it once finish() returned.
  std::unique_ptr<PendingHostCopy> start(void* host_dst, const void* src, size_t bytes,
                                         cudaStream_t stream);

 private:
  struct Buffer {
    void* pinned = nullptr;
    size_t bytes = 0;
  };
  class Download;

  bool take(size_t bytes, Buffer& buffer);  // false when no pinned memory can be had
  void give_back(Buffer buffer);

  std::mutex mutex_;
  std::vector<Buffer> free_;
  bool unavailable_ = false;  // cudaMallocHost failed once: copies go the pageable way
};

}  // namespace moefold::cuda
