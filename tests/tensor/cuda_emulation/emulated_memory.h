// The emulated device's memory: host allocations that the runtime tracks as device memory of a
// device (or as pinned host memory), so copies, kernels and cuBLAS calls can be refused where a
// GPU would refuse or fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

namespace moefold::cuda_emulation {

inline constexpr size_t kDeviceBytes = size_t{4} << 30;  // each device's memory
inline constexpr int kPinnedHost = -1;                   // allocate()'s "device" of pinned memory
inline constexpr int kNotDevice = -1;                    // device_of(): not in device memory
inline constexpr int kOverrun = -2;  // device_of(): starts in an allocation, ends past it

class EmulatedMemory {
 public:
  // Device memory comes filled with 0xFF bytes (NaN as float32 and bf16), so reading what was
  // never written shows, and is filled so again when released; null when the device's
  // kDeviceBytes are taken (or bytes is 0).
  void* allocate(size_t bytes, int device);
  bool release(void* ptr, bool pinned);
  // Whether ptr is where an allocation of that kind begins (what release accepts).
  bool allocation(const void* ptr, bool pinned) const;
  // The device whose allocation holds [ptr, ptr + bytes), kNotDevice or kOverrun.
  int device_of(const void* ptr, size_t bytes) const;
  bool pinned(const void* ptr) const;

 private:
  struct Allocation {
    size_t bytes;
    int device;  // kPinnedHost for pinned host memory
  };
  // The allocation holding ptr (or ending at it), or end().
  std::map<uintptr_t, Allocation>::const_iterator find(uintptr_t ptr) const;

  mutable std::mutex mutex_;
  std::map<uintptr_t, Allocation> allocations_;
  std::map<int, size_t> in_use_;  // bytes by device
};

EmulatedMemory& memory();

}  // namespace moefold::cuda_emulation
