// The CUDA backend's device discovery: skips cleanly where no GPU is present (CI), and on a GPU
// machine selects and describes every device.
#include "tensor/cuda/cuda_device.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace moefold::cuda {
namespace {

TEST(CudaDevice, SelectsAndDescribesEveryDevice) {
  const int count = device_count();
  if (count == 0) GTEST_SKIP() << "no CUDA device on this machine";
  int current = 0;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  for (int device = 0; device < count; ++device) {
    EXPECT_TRUE(set_device(device).ok());
    auto description = describe_device(device);
    ASSERT_TRUE(description.ok()) << description.status();
    EXPECT_NE(description->find("sm_"), std::string::npos) << *description;
  }
  // Back to the registered backend's device: its kernels launch on this thread's current one.
  EXPECT_TRUE(set_device(current).ok());
}

TEST(CudaDevice, AnAbsentDeviceIsAClearError) {
  const int count = device_count();
  const absl::Status status = set_device(count + 7);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("cudaSetDevice"), std::string::npos) << status;
}

}  // namespace
}  // namespace moefold::cuda
