// The GPU tests' main: registers the real CUDA backend on the last device and runs every test
// against it. Without a GPU (or driver) it exits 77, which ctest reports as skipped
// (SKIP_RETURN_CODE).
#include <gtest/gtest.h>

#include <cstdio>

#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_device.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int devices = moefold::cuda::device_count();
  if (devices == 0) {
    std::printf("no CUDA device or driver on this machine: the gpu tests are skipped\n");
    return 77;
  }
  // The last GPU: on a machine with several, code that silently uses device 0 then fails here.
  if (absl::Status s = moefold::cuda::register_cuda_backend(devices - 1); !s.ok()) {
    std::fprintf(stderr, "cannot start the CUDA backend: %s\n", s.ToString().c_str());
    return 1;
  }
  return RUN_ALL_TESTS();
}
