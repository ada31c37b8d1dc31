// The bf16 attention's two CUDA paths against the CPU attention: the flash kernels
// (tensor/cuda/flash_attention.cu, head dims 64 and 128) and the chunked cuBLAS path they
// replace where they fit, on partial tiles, GQA, unsorted positions and a ring step whose
// first query tile sees no key. The gradients start non-zero: both paths accumulate into them;
// dK and dV bf16, or float32 as ring attention sums them.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/tensor/cuda/device_compare.h"

namespace moefold {
namespace {

using testing::bf16_on;
using testing::expect_devices_agree;
using testing::FlashAttentionScope;
using testing::host;
using testing::positions;

constexpr double kBf16Tol = 2e-2;  // one bf16 rounding of a sum, relative to 1 + |value|

struct Case {
  const char* name;
  int64_t B, Sq, Skv, nh, nkv, d;
  std::vector<int32_t> q_pos, k_pos;
};

// kv_grad: dK and dV's dtype (float32: ring attention's travelling sums under bf16).
void expect_attention_matches_cpu(const Case& c, DType kv_grad) {
  expect_devices_agree([&](Device dev) {
    const ops::AttentionShape s{c.B, c.Sq, c.Skv, c.nh, c.nkv, c.d};
    Tensor q = bf16_on(dev, {c.B, c.Sq, c.nh, c.d}, 41);
    Tensor k = bf16_on(dev, {c.B, c.Skv, c.nkv, c.d}, 42);
    Tensor v = bf16_on(dev, {c.B, c.Skv, c.nkv, c.d}, 43);
    Tensor dout = bf16_on(dev, q.shape(), 44);
    Tensor o = Tensor::empty(q.shape(), DType::kBFloat16, dev);
    Tensor lse = Tensor::empty({c.B, c.nh, c.Sq}, DType::kFloat32, dev);
    Tensor dq = bf16_on(dev, q.shape(), 45);
    Tensor dk = kv_grad == DType::kBFloat16 ? bf16_on(dev, k.shape(), 46)
                                            : testing::random_on(dev, k.shape(), 46);
    Tensor dv = kv_grad == DType::kBFloat16 ? bf16_on(dev, v.shape(), 47)
                                            : testing::random_on(dev, v.shape(), 47);
    ops::attention_forward(q, k, v, o, lse, c.q_pos, c.k_pos, s);
    ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, c.q_pos, c.k_pos, s);
    return host({o, lse, dq, dk, dv});
  }, kBf16Tol);
}

// On the GPUs the flash kernels are built for (A100, H100, H200: sm_80, sm_90, each with the
// shared memory both head dims need), "flash" below is the flash path, not a silent fallback.
TEST(FlashAttention, ServesHeadDims64And128OnSm80AndSm90) {
  const auto& backend = dynamic_cast<const cuda::CudaBackend&>(backend_for(Device::kCuda));
  const std::string device = backend.describe();
  if (device.find("sm_80") == std::string::npos && device.find("sm_90") == std::string::npos) {
    GTEST_SKIP() << device << " is neither sm_80 nor sm_90";
  }
  EXPECT_TRUE(backend.flash_attention_serves(64)) << device;
  EXPECT_TRUE(backend.flash_attention_serves(128)) << device;
  EXPECT_FALSE(backend.flash_attention_serves(96)) << "head dims other than 64 and 128";
}

TEST(FlashAttention, BothPathsMatchTheCpuAttention) {
  std::vector<Case> cases;
  for (int64_t d : {64, 128}) {
    cases.push_back({"causal GQA over partial tiles", 2, 150, 150, 4, 2, d, positions(150, 0),
                     positions(150, 0)});
    cases.push_back({"positions in any order", 1, 100, 100, 2, 1, d, positions(100, 0, 37),
                     positions(100, 0, 37)});
    cases.push_back({"ring step: keys from position 70", 1, 130, 200, 2, 2, d,
                     positions(130, 0), positions(200, 70)});
  }
  for (bool flash : {true, false}) {
    const FlashAttentionScope scope(flash);
    for (const Case& c : cases) {
      for (DType kv_grad : {DType::kBFloat16, DType::kFloat32}) {
        SCOPED_TRACE(::testing::Message()
                     << c.name << ", head dim " << c.d << (flash ? ", flash" : ", chunked")
                     << (kv_grad == DType::kFloat32 ? ", float32 dK/dV" : ""));
        expect_attention_matches_cpu(c, kv_grad);
      }
    }
  }
}

}  // namespace
}  // namespace moefold
