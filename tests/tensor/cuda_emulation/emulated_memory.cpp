#include "tests/tensor/cuda_emulation/emulated_memory.h"

#include <cstring>
#include <new>

namespace moefold::cuda_emulation {
namespace {

constexpr std::align_val_t kAlignment{256};  // cudaMalloc's
// Unused bytes after each allocation: a pointer one past its end (an empty tensor's, which a
// kernel may take) must not also be the start of host memory, which heaps without headers
// (ThreadSanitizer's) place right there.
constexpr size_t kTail = 256;

}  // namespace

EmulatedMemory& memory() {
  static EmulatedMemory m;
  return m;
}

void* EmulatedMemory::allocate(size_t bytes, int device) {
  if (bytes == 0) return nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (device != kPinnedHost && in_use_[device] + bytes > kDeviceBytes) return nullptr;
    in_use_[device] += bytes;
  }
  void* ptr = ::operator new(bytes + kTail, kAlignment);
  if (device != kPinnedHost) std::memset(ptr, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  allocations_[reinterpret_cast<uintptr_t>(ptr)] = {bytes, device};
  return ptr;
}

bool EmulatedMemory::release(void* ptr, bool pinned) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == allocations_.end() || (it->second.device == kPinnedHost) != pinned) return false;
    in_use_[it->second.device] -= it->second.bytes;
    // Poisoned like fresh memory: work that reads it after its free (a GPU's allocator may
    // already have handed it to another tensor) reads NaN where the heap keeps it.
    if (it->second.device != kPinnedHost) std::memset(ptr, 0xFF, it->second.bytes);
    allocations_.erase(it);
  }
  ::operator delete(ptr, kAlignment);
  return true;
}

bool EmulatedMemory::allocation(const void* ptr, bool pinned) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = allocations_.find(reinterpret_cast<uintptr_t>(ptr));
  return it != allocations_.end() && (it->second.device == kPinnedHost) == pinned;
}

std::map<uintptr_t, EmulatedMemory::Allocation>::const_iterator EmulatedMemory::find(
    uintptr_t ptr) const {
  auto it = allocations_.upper_bound(ptr);
  if (it == allocations_.begin()) return allocations_.end();
  --it;
  return ptr <= it->first + it->second.bytes ? it : allocations_.end();
}

int EmulatedMemory::device_of(const void* ptr, size_t bytes) const {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = find(address);
  if (it == allocations_.end() || it->second.device == kPinnedHost) return kNotDevice;
  if (address == it->first + it->second.bytes && bytes > 0) return kNotDevice;  // the next byte
  return address + bytes <= it->first + it->second.bytes ? it->second.device : kOverrun;
}

bool EmulatedMemory::pinned(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = find(reinterpret_cast<uintptr_t>(ptr));
  return it != allocations_.end() && it->second.device == kPinnedHost;
}

}  // namespace moefold::cuda_emulation
