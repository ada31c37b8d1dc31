#include "tensor/cuda/pinned_downloads.h"

#include <cstring>

#include "tensor/cuda/cuda_check.h"

namespace moefold::cuda {

class PinnedDownloads::Download final : public PendingHostCopy {
 public:
  Download(PinnedDownloads& pool, Buffer buffer, void* host_dst, size_t bytes, cudaEvent_t event)
      : pool_(pool), buffer_(buffer), host_dst_(host_dst), bytes_(bytes), event_(event) {}
  ~Download() override {
    if (event_ != nullptr) release();  // never finished (an error on the way): no copy out
  }

  void finish() override {
    if (event_ == nullptr) return;
    MOEFOLD_CUDA_CHECK(cudaEventSynchronize(event_));
    std::memcpy(host_dst_, buffer_.pinned, bytes_);
    release();
  }

 private:
  void release() {
    cudaEventSynchronize(event_);  // the buffer is written until then
    cudaEventDestroy(event_);
    event_ = nullptr;
    pool_.give_back(buffer_);
  }

  PinnedDownloads& pool_;
  Buffer buffer_;
  void* host_dst_;
  size_t bytes_;
  cudaEvent_t event_;
};

namespace {

struct FinishedDownload final : PendingHostCopy {
  void finish() override {}
};

}  // namespace

PinnedDownloads::~PinnedDownloads() {
  for (const Buffer& buffer : free_) cudaFreeHost(buffer.pinned);
}

bool PinnedDownloads::take(size_t bytes, Buffer& buffer) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (unavailable_) return false;
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {
      if (free_[i].bytes >= bytes && (best == free_.size() || free_[i].bytes < free_[best].bytes)) {
        best = i;
      }
    }
    if (best < free_.size()) {
      buffer = free_[best];
      free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
      return true;
    }
  }
  buffer.bytes = bytes;
  if (cudaMallocHost(&buffer.pinned, bytes) != cudaSuccess) {
    cudaGetLastError();  // no pinned memory: this copy and the later ones go the pageable way
    std::lock_guard<std::mutex> lock(mutex_);
    unavailable_ = true;
    return false;
  }
  return true;
}

void PinnedDownloads::give_back(Buffer buffer) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.push_back(buffer);
}

std::unique_ptr<PendingHostCopy> PinnedDownloads::start(void* host_dst, const void* src,
                                                        size_t bytes, cudaStream_t stream) {
  Buffer buffer;
  if (bytes == 0 || !take(bytes, buffer)) {
    if (bytes > 0) {
      MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
      MOEFOLD_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    return std::make_unique<FinishedDownload>();
  }
  cudaEvent_t event = nullptr;
  MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(buffer.pinned, src, bytes, cudaMemcpyDeviceToHost, stream));
  MOEFOLD_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  MOEFOLD_CUDA_CHECK(cudaEventRecord(event, stream));
  return std::make_unique<Download>(*this, buffer, host_dst, bytes, event);
}

}  // namespace moefold::cuda
