// The messages for GPU machines whose driver or NCCL does not fit this build: every branch, from
// the version numbers the libraries report.
#include "tensor/device_versions.h"

#include <gtest/gtest.h>

#include <vector>

namespace moefold {
namespace {

TEST(DeviceVersions, VersionNumbersReadAsTheLibrariesPrintThem) {
  EXPECT_EQ(cuda_version_string(12040), "12.4");
  EXPECT_EQ(cuda_version_string(13000), "13.0");
  EXPECT_EQ(nccl_version_string(22105), "2.21.5");
  EXPECT_EQ(nccl_version_string(22703), "2.27.3");
}

TEST(DeviceVersions, AnOldDriverNamesBothCudaVersions) {
  EXPECT_EQ(gpu_unavailable_reason(12040, 13000, "cudaErrorInsufficientDriver"),
            "the NVIDIA driver supports CUDA 12.4, older than the CUDA 13.0 runtime this moefold "
            "was built with: update the driver (cudaErrorInsufficientDriver)");
  EXPECT_EQ(gpu_unavailable_reason(0, 13000, "cudaErrorNoDevice"),
            "no NVIDIA driver is installed (cudaErrorNoDevice)");
  EXPECT_EQ(gpu_unavailable_reason(13010, 13000, "no CUDA-capable device is detected"),
            "no CUDA-capable device is detected");
}

TEST(DeviceVersions, NcclMismatchNamesTheRankAndItsDevice) {
  const std::vector<int> devices = {0, 1, 2, 3};
  EXPECT_FALSE(nccl_version_problem(std::vector<int>{22703, 22703, 22703, 22703}, devices, 22703));
  EXPECT_FALSE(nccl_version_problem(std::vector<int>{22801, 22801}, devices, 22703))
      << "a newer NCCL than built against is fine when all ranks share it";
  EXPECT_EQ(nccl_version_problem(std::vector<int>{22703, 22703, 21805, 22703}, devices, 22703),
            "rank 2 (cuda:2) loads NCCL 2.18.5, older than the NCCL 2.27.3 this moefold was built "
            "with");
  EXPECT_EQ(nccl_version_problem(std::vector<int>{22801, 22703, 22801}, devices, 22703),
            "rank 1 (cuda:1) loads NCCL 2.27.3 but rank 0 (cuda:0) loads NCCL 2.28.1: every rank "
            "needs the same NCCL");
}

}  // namespace
}  // namespace moefold
