// A stand-in device for machines without a GPU: the CPU backend registered as Device::kCuda,
// whose memory is ordinary host memory that it knows as its own (owns()). Every path that
// depends on where a tensor lives — MPI staging through host buffers, to_host/to_device, stash
// and parameter devices, the backend conformance table — then runs in CI. The math is the CPU
// backend's, so results must equal the CPU's exactly.
#pragma once

#include <atomic>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cpu/cpu_backend.h"
#include "tests/tensor/guarded_arena.h"

namespace moefold::testing {

class HostMemoryDevice final : public cpu::CpuBackend {
 public:
  Device device() const override { return Device::kCuda; }
  std::string describe() const override { return "host-memory stand-in device"; }

  void* allocate(size_t bytes) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (allocated_ + bytes > capacity_) return nullptr;  // the device is full
    }
    void* ptr = guarded_ ? arena().allocate(bytes) : cpu::CpuBackend::allocate(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    if (ptr != nullptr) {
      blocks_[static_cast<const char*>(ptr)] = bytes;
      allocated_ += bytes;
    }
    return ptr;
  }
  void deallocate(void* ptr, size_t bytes) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (blocks_.erase(static_cast<const char*>(ptr)) > 0) allocated_ -= bytes;
    }
    if (arena_ != nullptr && arena_->contains(ptr)) {
      arena_->release(ptr, bytes);
    } else {
      cpu::CpuBackend::deallocate(ptr, bytes);
    }
  }
  bool owns(const void* ptr) const override {
    const char* p = static_cast<const char*>(ptr);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(p);
    if (it == blocks_.begin()) return false;
    --it;
    return p < it->first + std::max<size_t>(it->second, 1);
  }

  // The device's memory: allocations beyond it fail as a full GPU's do (unlimited by default).
  void set_capacity(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    capacity_ = bytes;
  }
  size_t allocated() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return allocated_;
  }

  // Guarded: memory allocated from now on is closed to the host outside backend calls
  // (guarded_arena.h), so a host dereference of a device pointer faults as on a GPU.
  void set_guarded(bool guarded) {
    if (guarded && arena_ == nullptr) arena_ = std::make_unique<GuardedArena>();
    guarded_ = guarded;
  }
  void begin_op() override {
    ++device_calls_;
    if (arena_ != nullptr) arena_->open();
  }
  // Backend calls so far (ops and memory operations): each is at least one kernel launch or
  // copy on a GPU, so their number must not grow with the tokens of a step.
  int64_t device_calls() const { return device_calls_.load(); }
  void end_op() override {
    if (arena_ != nullptr) arena_->close();
  }
  // The memory operations the ops layer and Tensor call directly (not through an op).
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override {
    Call call(*this);
    cpu::CpuBackend::copy_from_host(dst, host_src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    Call call(*this);
    cpu::CpuBackend::copy(dst, src, bytes);
  }
  void zero(void* dst, size_t bytes) override {
    Call call(*this);
    cpu::CpuBackend::zero(dst, bytes);
  }
  void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                 int64_t rows, int64_t cols, size_t element_bytes) override {
    Call call(*this);
    cpu::CpuBackend::copy_rows(dst, dst_stride, src, src_stride, rows, cols, element_bytes);
  }
  void fill(float* x, float value, int64_t n) override {
    Call call(*this);
    cpu::CpuBackend::fill(x, value, n);
  }
  void widen_bf16(const uint16_t* src, float* dst, int64_t n) override {
    Call call(*this);
    cpu::CpuBackend::widen_bf16(src, dst, n);
  }
  void round_to_bf16(const float* src, uint16_t* dst, int64_t n) override {
    Call call(*this);
    cpu::CpuBackend::round_to_bf16(src, dst, n);
  }

  // The calls at which a CUDA backend makes the host wait for its stream: device→host copies,
  // synchronisation, and the reductions that return a host number.
  int64_t host_waits() const { return host_waits_.load(); }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    Call call(*this);
    ++host_waits_;
    cpu::CpuBackend::copy_to_host(host_dst, src, bytes);
  }
  // The data is taken at once (in stream order) but reaches host_dst only at finish(), which
  // counts the wait and the backend calls issued while the copy was pending (work the device
  // has while the host waits); until then host_dst holds NaNs, so a read before the wait shows.
  std::unique_ptr<PendingHostCopy> start_copy_to_host(void* host_dst, const void* src,
                                                      size_t bytes) override {
    std::vector<char> data(bytes);
    {
      Call call(*this);
      cpu::CpuBackend::copy_to_host(data.data(), src, bytes);
    }
    std::memset(host_dst, 0xff, bytes);
    return std::make_unique<PendingCopy>(*this, device_calls(), host_dst, std::move(data));
  }
  // Backend calls issued between the start of a device→host copy and the host's wait for it.
  int64_t calls_while_copies_pending() const { return calls_while_copies_pending_.load(); }
  void synchronize() override { ++host_waits_; }
  double square_sum(const float* x, int64_t n) override {
    ++host_waits_;
    return cpu::CpuBackend::square_sum(x, n);
  }
  double sum(const float* x, int64_t n) override {
    ++host_waits_;
    return cpu::CpuBackend::sum(x, n);
  }
  double square_sum_total(std::span<const float* const> xs,
                          std::span<const int64_t> ns) override {
    ++host_waits_;
    double total = 0.0;
    for (size_t i = 0; i < xs.size(); ++i) total += cpu::CpuBackend::square_sum(xs[i], ns[i]);
    return total;
  }

 private:
  struct Call {
    explicit Call(HostMemoryDevice& device) : device(device) { device.begin_op(); }
    ~Call() { device.end_op(); }
    HostMemoryDevice& device;
  };
  GuardedArena& arena() { return *arena_; }
  struct PendingCopy final : PendingHostCopy {
    PendingCopy(HostMemoryDevice& device, int64_t calls_at_start, void* host_dst,
                std::vector<char> data)
        : device(device), calls_at_start(calls_at_start), host_dst(host_dst),
          data(std::move(data)) {}
    void finish() override {
      ++device.host_waits_;
      device.calls_while_copies_pending_ += device.device_calls() - calls_at_start;
      if (!data.empty()) std::memcpy(host_dst, data.data(), data.size());
    }
    HostMemoryDevice& device;
    int64_t calls_at_start;
    void* host_dst;
    std::vector<char> data;
  };

  std::atomic<int64_t> host_waits_{0};
  std::atomic<int64_t> calls_while_copies_pending_{0};
  std::atomic<int64_t> device_calls_{0};
  std::unique_ptr<GuardedArena> arena_;
  bool guarded_ = false;
  mutable std::mutex mutex_;
  std::map<const char*, size_t> blocks_;  // base → bytes
  size_t allocated_ = 0;
  size_t capacity_ = std::numeric_limits<size_t>::max();
};

// Registers the stand-in as this process's kCuda backend; false when a real CUDA backend is
// already there (the test then runs on it or skips).
inline bool use_host_memory_device() {
  static const bool registered = [] {
    if (has_backend(Device::kCuda)) return false;
    register_backend(std::make_unique<HostMemoryDevice>());
    return true;
  }();
  return registered;
}

}  // namespace moefold::testing
