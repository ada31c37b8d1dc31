// CUDA device discovery. The rest of the CUDA backend (cuBLAS GEMMs, kernels, NCCL) builds on it.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moefold::cuda {

// Number of visible GPUs; 0 when the driver is missing or no device is present.
int device_count();

// Why device_count() is 0 ("" when it is not): no driver, a driver older than this build's
// CUDA runtime (naming both versions), or the CUDA error.
std::string unavailable_reason();

// Selects `device` (usually the node-local rank modulo device_count()) for this process.
absl::Status set_device(int device);

// "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90" for logs.
absl::StatusOr<std::string> describe_device(int device);

}  // namespace moefold::cuda
