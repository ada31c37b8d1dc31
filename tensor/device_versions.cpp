#include "tensor/device_versions.h"

#include "absl/strings/str_cat.h"

namespace moefold {

std::string cuda_version_string(int version) {
  return absl::StrCat(version / 1000, ".", (version % 1000) / 10);
}

std::string nccl_version_string(int code) {
  return absl::StrCat(code / 10000, ".", (code % 10000) / 100, ".", code % 100);
}

std::string gpu_unavailable_reason(int driver_version, int runtime_version,
                                   const std::string& error) {
  if (driver_version == 0) return absl::StrCat("no NVIDIA driver is installed (", error, ")");
  if (driver_version < runtime_version) {
    return absl::StrCat("the NVIDIA driver supports CUDA ", cuda_version_string(driver_version),
                        ", older than the CUDA ", cuda_version_string(runtime_version),
                        " runtime this moefold was built with: update the driver (", error, ")");
  }
  return error;
}

std::optional<std::string> nccl_version_problem(std::span<const int> versions,
                                                std::span<const int> devices, int built) {
  const auto rank = [&](size_t r) {
    return absl::StrCat("rank ", r, " (cuda:", devices[r], ") loads NCCL ",
                        nccl_version_string(versions[r]));
  };
  for (size_t r = 0; r < versions.size(); ++r) {
    if (versions[r] < built) {
      return absl::StrCat(rank(r), ", older than the NCCL ", nccl_version_string(built),
                          " this moefold was built with");
    }
    if (versions[r] != versions[0]) {
      return absl::StrCat(rank(r), " but ", rank(0), ": every rank needs the same NCCL");
    }
  }
  return std::nullopt;
}

}  // namespace moefold
