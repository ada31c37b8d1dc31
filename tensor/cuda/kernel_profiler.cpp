// The CUDA side of `moefold train --kernel-profile`: CUPTI's activity API records every kernel,
// copy and memset this process runs on the GPU, and tensor/kernel_profile.h sums them into a
// table. CUPTI is loaded at run time (dlopen), so the binaries need it only when a profile is
// asked for; the activity record layouts come from the toolkit's header.
#include <cupti_activity.h>
#include <cuda_runtime.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda_entry.h"
#include "tensor/kernel_profile.h"

namespace moefold {
namespace {

struct Cupti {
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
  decltype(&cuptiGetResultString) result_string = nullptr;
};

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                         CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET};

// One profile per process: CUPTI's callbacks are global.
struct Profile {
  Cupti cupti;
  std::mutex mutex;
  std::vector<KernelRecord> records;
  std::chrono::steady_clock::time_point start;
  bool running = false;
};

Profile& profile() {
  static Profile p;
  return p;
}

absl::StatusOr<Cupti> load_cupti() {
  void* library = nullptr;
  for (const char* name : {"libcupti.so.13", "libcupti.so"}) {
    if ((library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
  }
  if (library == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--kernel-profile needs CUDA's CUPTI library (libcupti.so.13; it ships with the CUDA "
        "toolkit, in lib64 or extras/CUPTI/lib64): add its folder to LD_LIBRARY_PATH (",
        dlerror(), ")"));
  }
  Cupti c;
  const auto bind = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(library, symbol));
    return fn != nullptr;
  };
  if (!bind(c.register_callbacks, "cuptiActivityRegisterCallbacks") ||
      !bind(c.enable, "cuptiActivityEnable") || !bind(c.disable, "cuptiActivityDisable") ||
      !bind(c.flush_all, "cuptiActivityFlushAll") ||
      !bind(c.next_record, "cuptiActivityGetNextRecord") ||
      !bind(c.result_string, "cuptiGetResultString")) {
    return absl::FailedPreconditionError("the CUPTI library found lacks the activity API");
  }
  return c;
}

absl::Status check(CUptiResult result, const char* call) {
  if (result == CUPTI_SUCCESS) return absl::OkStatus();
  const char* text = "unknown error";
  profile().cupti.result_string(result, &text);
  return absl::InternalError(absl::StrCat("kernel profile: ", call, " failed: ", text));
}

std::string kernel_name(const char* mangled) {
  if (mangled == nullptr) return "(unnamed kernel)";
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> demangled(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), &std::free);
  return short_kernel_name(status == 0 && demangled ? demangled.get() : mangled);
}

const char* copy_name(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD:
      return "memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH:
      return "memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD:
      return "memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH:
      return "memcpy HtoH";
    default:
      return "memcpy (other)";
  }
}

constexpr size_t kBufferBytes = size_t{8} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer != nullptr ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  Profile& p = profile();
  std::vector<KernelRecord> batch;
  CUpti_Activity* record = nullptr;
  while (p.cupti.next_record(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) {
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      batch.push_back({kernel_name(k->name), static_cast<int64_t>(k->end - k->start),
                       k->blockX * k->blockY * k->blockZ, k->registersPerThread,
                       int64_t{k->staticSharedMemory} + k->dynamicSharedMemory});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
      batch.push_back({copy_name(m->copyKind), static_cast<int64_t>(m->end - m->start)});
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
      batch.push_back({"memset", static_cast<int64_t>(m->end - m->start)});
    }
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(p.mutex);
  for (KernelRecord& r : batch) p.records.push_back(std::move(r));
}

}  // namespace

absl::Status start_cuda_kernel_profile() {
  Profile& p = profile();
  if (p.running) return absl::FailedPreconditionError("a kernel profile is already running");
  auto cupti = load_cupti();
  if (!cupti.ok()) return cupti.status();
  p.cupti = *cupti;
  if (absl::Status s = check(p.cupti.register_callbacks(buffer_requested, buffer_completed),
                             "cuptiActivityRegisterCallbacks");
      !s.ok()) {
    return s;
  }
  for (CUpti_ActivityKind kind : kKinds) {
    if (absl::Status s = check(p.cupti.enable(kind), "cuptiActivityEnable"); !s.ok()) return s;
  }
  p.records.clear();
  p.start = std::chrono::steady_clock::now();
  p.running = true;
  return absl::OkStatus();
}

absl::StatusOr<std::string> finish_cuda_kernel_profile(int top) {
  Profile& p = profile();
  if (!p.running) return absl::FailedPreconditionError("no kernel profile is running");
  MOEFOLD_CUDA_CHECK(cudaDeviceSynchronize());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
  p.running = false;
  if (absl::Status s = check(p.cupti.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED),
                             "cuptiActivityFlushAll");
      !s.ok()) {
    return s;
  }
  for (CUpti_ActivityKind kind : kKinds) p.cupti.disable(kind);
  std::lock_guard<std::mutex> lock(p.mutex);
  return format_kernel_profile(p.records, wall, top);
}

}  // namespace moefold
