// The GPU tests' comparison: one op body run on the CPU backend and on the CUDA device from the
// same seeded inputs, every output copied back and compared element by element.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cuda_entry.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::testing {

inline Tensor random_on(Device device, std::vector<int64_t> shape, uint32_t seed,
                        float lo = -1.0f, float hi = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return ops::to_device(Tensor::from_vector(std::move(shape), random_floats(n, seed, lo, hi)),
                        device);
}

// random_on's values stored as bf16 (rounded to nearest even).
inline Tensor bf16_on(Device device, std::vector<int64_t> shape, uint32_t seed) {
  const Tensor wide = random_on(device, shape, seed);
  Tensor narrow = Tensor::empty(std::move(shape), DType::kBFloat16, device);
  ops::cast(narrow, wide);
  return narrow;
}

using Outputs = std::vector<std::vector<float>>;

inline Outputs host(std::initializer_list<Tensor> tensors) {
  Outputs out;
  for (const Tensor& t : tensors) out.push_back(t.to_vector());
  return out;
}

// Runs `op` on the CPU and on the device and compares every output within
// tol·(1 + |cpu value|); equal values (infinities included) always pass.
inline void expect_devices_agree(const std::function<Outputs(Device)>& op, double tol) {
  ASSERT_TRUE(has_backend(Device::kCuda));
  const Outputs cpu = op(Device::kCpu), gpu = op(Device::kCuda);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_EQ(cpu[i].size(), gpu[i].size()) << "output " << i;
    for (size_t j = 0; j < cpu[i].size(); ++j) {
      if (gpu[i][j] == cpu[i][j]) continue;
      ASSERT_NEAR(gpu[i][j], cpu[i][j], tol * (1.0 + std::abs(cpu[i][j])))
          << "output " << i << " [" << j << "]";
    }
  }
}

// Selects the CUDA backend's bf16 attention path for a scope: the flash kernels wherever they
// fit, or the chunked cuBLAS path; then the mode MOEFOLD_FLASH_ATTENTION asks for again.
class FlashAttentionScope {
 public:
  explicit FlashAttentionScope(bool flash) {
    set_cuda_flash_attention(flash ? FlashAttentionMode::kAlways : FlashAttentionMode::kNever);
  }
  ~FlashAttentionScope() {
    set_cuda_flash_attention(flash_attention_mode(std::getenv("MOEFOLD_FLASH_ATTENTION")));
  }
  FlashAttentionScope(const FlashAttentionScope&) = delete;
  FlashAttentionScope& operator=(const FlashAttentionScope&) = delete;
};

}  // namespace moefold::testing
