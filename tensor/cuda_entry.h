// The CUDA backend's entry points for code outside tensor/ (launch binds ranks to GPUs, the NCCL
// communicator orders its work after the compute stream), which may not include tensor/cuda/.
// Defined by the CUDA backend: only code built with CUDA (MOEFOLD_HAVE_CUDA) may call them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tensor/attention_path_tuner.h"

namespace moefold {

// Visible GPUs; 0 when the driver is missing or no device is present.
int cuda_device_count();
// Why cuda_device_count() is 0: no driver, a driver too old for this build's CUDA runtime (both
// versions named), or the CUDA error; "" when a GPU is visible.
std::string cuda_unavailable_reason();
// Creates the CUDA backend on `device` and registers it as this process's Device::kCuda backend.
absl::Status register_cuda_device(int device);
// The cudaStream_t of Device::kCuda's backend, or null when no CUDA backend is registered.
void* cuda_compute_stream();
// A kernel profile of this process's GPU work (tensor/kernel_profile.h's table of every kernel,
// copy and memset, by name), from start to finish; CUPTI is loaded at the start, and its
// absence is a clear error.
absl::Status start_cuda_kernel_profile();
absl::StatusOr<std::string> finish_cuda_kernel_profile(int top);
// Where the flash kernels fit, whether Device::kCuda's bf16 attention takes them always, never
// (the chunked cuBLAS path), or after timing both per shape class (the default; tests and
// benchmarks compare the two).
void set_cuda_flash_attention(FlashAttentionMode mode);
// The timed choices between the two paths so far, one line each (empty without a CUDA backend).
std::vector<std::string> cuda_attention_path_report();

}  // namespace moefold
