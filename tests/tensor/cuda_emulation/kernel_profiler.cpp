// The emulated device has no CUPTI: kernel profiles are an error naming why (the real ones are
// tensor/cuda/kernel_profiler.cpp's).
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tensor/cuda_entry.h"

namespace moefold {

absl::Status start_cuda_kernel_profile() {
  return absl::UnimplementedError("kernel profiles need CUPTI, which the emulated GPU lacks");
}

absl::StatusOr<std::string> finish_cuda_kernel_profile(int) {
  return absl::FailedPreconditionError("no kernel profile is running");
}

}  // namespace moefold
