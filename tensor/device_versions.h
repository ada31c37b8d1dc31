// Clear messages for GPU machines whose software does not fit this build (issue 16, "Bad
// input"): a missing or too old NVIDIA driver for the CUDA runtime, and NCCL libraries that
// differ from the one built against or between ranks. Pure functions of the version numbers the
// libraries report, so that the CPU tests check every message; the CUDA backend and the NCCL
// communicator call them with the real numbers.
#pragma once

#include <optional>
#include <span>
#include <string>

namespace moefold {

// "12.4" for CUDA's 1000·major + 10·minor (cudaDriverGetVersion, cudaRuntimeGetVersion).
std::string cuda_version_string(int version);
// "2.21.5" for NCCL's 10000·major + 100·minor + patch (ncclGetVersion, NCCL_VERSION_CODE).
std::string nccl_version_string(int code);

// Why no GPU can be used, from the driver's CUDA version (0: no driver), this build's runtime
// version and the error cudaGetDeviceCount gave.
std::string gpu_unavailable_reason(int driver_version, int runtime_version,
                                   const std::string& error);

// Every rank's NCCL (versions[r], on devices[r]) must be at least the one this moefold was
// built with and the same on all ranks (their protocols differ between versions): the first
// offending rank, its device and both versions, or nothing when all fit.
std::optional<std::string> nccl_version_problem(std::span<const int> versions,
                                                std::span<const int> devices, int built);

}  // namespace moefold
