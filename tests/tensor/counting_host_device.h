// A host-memory stand-in device (as tests/tensor/host_device.h's) that counts its device→host
// copies, for tests of how often a layer waits for the device. A process registers one device
// backend, so a test using it has its own binary.
#pragma once

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "tensor/backend.h"
#include "tensor/cpu/cpu_backend.h"

namespace moefold::testing {

class CountingHostDevice final : public cpu::CpuBackend {
 public:
  Device device() const override { return Device::kCuda; }
  std::string describe() const override { return "copy-counting host-memory stand-in device"; }
  void* allocate(size_t bytes) override {
    void* ptr = cpu::CpuBackend::allocate(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    if (ptr != nullptr) blocks_[static_cast<const char*>(ptr)] = bytes;
    return ptr;
  }
  void deallocate(void* ptr, size_t bytes) override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks_.erase(static_cast<const char*>(ptr));
    }
    cpu::CpuBackend::deallocate(ptr, bytes);
  }
  bool owns(const void* ptr) const override {
    const char* p = static_cast<const char*>(ptr);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(p);
    if (it == blocks_.begin()) return false;
    --it;
    return p < it->first + std::max<size_t>(it->second, 1);
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    ++copies_to_host;
    cpu::CpuBackend::copy_to_host(host_dst, src, bytes);
  }

  std::atomic<int64_t> copies_to_host{0};

 private:
  mutable std::mutex mutex_;
  std::map<const char*, size_t> blocks_;  // base → bytes
};

}  // namespace moefold::testing
