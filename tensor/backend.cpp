#include "tensor/backend.h"

#include <array>
#include <mutex>
#include <stdexcept>

#include "tensor/check.h"
#include "tensor/cpu/cpu_backend.h"

namespace moefold {
namespace {

constexpr size_t kDevices = 2;

struct Registry {
  std::mutex mutex;
  std::array<std::unique_ptr<Backend>, kDevices> backends;
};

Registry& registry() {
  static Registry* r = [] {
    auto* created = new Registry;  // never destroyed: tensors may outlive static destructors
    created->backends[static_cast<size_t>(Device::kCpu)] = cpu::make_cpu_backend();
    return created;
  }();
  return *r;
}

}  // namespace

void Backend::widen_bf16(const uint16_t*, float*, int64_t) {
  throw std::runtime_error(std::string("not supported yet on ") + device_name(device()) +
                           ": bfloat16 tensors (no bf16 conversion kernel)");
}

void Backend::round_to_bf16(const float*, uint16_t*, int64_t) {
  throw std::runtime_error(std::string("not supported yet on ") + device_name(device()) +
                           ": bfloat16 tensors (no bf16 conversion kernel)");
}

Backend& backend_for(Device device) {
  Registry& r = registry();
  Backend* backend = r.backends[static_cast<size_t>(device)].get();
  if (backend == nullptr) {
    throw std::runtime_error(std::string("no ") + device_name(device) +
                             " backend: this build or this machine has no such device");
  }
  return *backend;
}

void register_backend(std::unique_ptr<Backend> backend) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const size_t slot = static_cast<size_t>(backend->device());
  MOEFOLD_CHECK(slot < kDevices && !r.backends[slot], "backend registered twice");
  r.backends[slot] = std::move(backend);
}

bool has_backend(Device device) {
  return registry().backends[static_cast<size_t>(device)] != nullptr;
}

Device device_of_pointer(const void* ptr) {
  for (const auto& backend : registry().backends) {
    if (backend && backend->device() != Device::kCpu && backend->owns(ptr)) {
      return backend->device();
    }
  }
  return Device::kCpu;
}

}  // namespace moefold
