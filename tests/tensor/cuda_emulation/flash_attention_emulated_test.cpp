// The flash attention kernels' own source (tensor/cuda/flash_attention_kernels.cuh), run on the
// CPU under the CUDA emulation, against the CPU attention at bf16 tolerance: their lane and warp
// indexing, the shared-memory carving, the WMMA operand layouts and leading dimensions, the
// barriers and the launches' grids, at both head dims, GQA, partial tiles, positions in any
// order, a ring step whose first query tile sees no key, and dK/dV in bf16 and float32.
#include "tests/tensor/cuda_emulation/cuda_emulation.h"
// The emulation first: the kernels are written for nvcc's dialect.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/attention_plan.h"
#include "tensor/cuda/flash_attention_kernels.cuh"
#include "tensor/kernel_math.h"
#include "tests/tensor/attention_reference.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::cuda {
namespace {

using testing::AttentionResults;
using testing::bf16_values;
using testing::positions;

struct Case {
  AttentionDims dims;
  std::vector<int32_t> q_pos, k_pos;
};

std::vector<uint16_t> to_bits(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = float_to_bf16_bits(values[i]);
  return bits;
}

float widen(float x) { return x; }
float widen(uint16_t bits) { return bf16_bits_to_float(bits); }

template <typename T>
std::vector<float> widened(const std::vector<T>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = widen(values[i]);
  return out;
}

// The forward and backward kernels launched as CudaBackend launches them; the gradients start
// at zero, delta is Σ dO ⊙ O per row as attention_bf16.cu's delta_kernel computes it.
template <int D, typename G>
AttentionResults run_kernels(const Case& c, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v,
                             const std::vector<float>& dout) {
  const AttentionDims& m = c.dims;
  const std::vector<uint16_t> q16 = to_bits(q), k16 = to_bits(k), v16 = to_bits(v);
  const std::vector<uint16_t> dout16 = to_bits(dout);
  const std::vector<int32_t> key_tiles =
      flash_key_tiles(c.q_pos.data(), m.Sq, c.k_pos.data(), m.Skv, kFlashTile);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<uint16_t> o16(q.size(), float_to_bf16_bits(NAN));
  std::vector<float> lse(m.B * m.nh * m.Sq, NAN);
  cuda_emulation::launch(flash_forward_grid(key_tiles.size(), m.nh, m.B), dim3(kBlockThreads),
                         shared_bytes<ForwardShared, D>(), flash_forward_kernel<D>, q16.data(),
                         k16.data(), v16.data(), o16.data(), lse.data(), c.q_pos.data(),
                         c.k_pos.data(), key_tiles.data(), m.Sq, m.Skv, static_cast<int>(m.nh),
                         static_cast<int>(m.nkv), scale);

  std::vector<float> delta(lse.size());
  for (int64_t b = 0; b < m.B; ++b) {
    for (int64_t i = 0; i < m.Sq; ++i) {
      for (int64_t h = 0; h < m.nh; ++h) {
        const int64_t row = ((b * m.Sq + i) * m.nh + h) * D;
        float sum = 0.0f;
        for (int64_t x = 0; x < D; ++x) {
          sum += bf16_bits_to_float(dout16[row + x]) * bf16_bits_to_float(o16[row + x]);
        }
        delta[(b * m.nh + h) * m.Sq + i] = sum;
      }
    }
  }
  std::vector<float> dq(q.size(), 0.0f);
  std::vector<G> dk(k.size(), G{0}), dv(v.size(), G{0});
  const int64_t kv_tiles = (m.Skv + kFlashTile - 1) / kFlashTile;
  cuda_emulation::launch(flash_backward_grid(kv_tiles, m.nkv, m.B), dim3(kBlockThreads),
                         shared_bytes<BackwardShared, D>(), flash_backward_kernel<D, G>,
                         dout16.data(), q16.data(), k16.data(), v16.data(), lse.data(),
                         delta.data(), dq.data(), dk.data(), dv.data(), c.q_pos.data(),
                         c.k_pos.data(), key_tiles.data(), static_cast<int>(key_tiles.size()), m.Sq,
                         m.Skv, static_cast<int>(m.nh), static_cast<int>(m.nkv), scale);
  return {widened(o16), lse, dq, widened(dk), widened(dv)};
}

template <int D, typename G>
void expect_kernels_match_cpu_attention(const Case& c) {
  const AttentionDims& m = c.dims;
  ASSERT_EQ(m.d, D);
  const int64_t q_size = m.B * m.Sq * m.nh * m.d, kv_size = m.B * m.Skv * m.nkv * m.d;
  const auto q = bf16_values(q_size, 1), k = bf16_values(kv_size, 2);
  const auto v = bf16_values(kv_size, 3), dout = bf16_values(q_size, 4);
  testing::expect_matches_cpu_attention(run_kernels<D, G>(c, q, k, v, dout), m, q, k, v, dout,
                                        c.q_pos, c.k_pos);
}

TEST(FlashAttentionEmulated, CausalGqaOverAPartialTileAtHeadDim64) {
  expect_kernels_match_cpu_attention<64, uint16_t>(
      {{2, 70, 70, 4, 2, 64}, positions(70, 0), positions(70, 0)});
}

TEST(FlashAttentionEmulated, HeadDim128WithFloatKeyAndValueGradients) {
  expect_kernels_match_cpu_attention<128, float>(
      {{1, 80, 80, 2, 1, 128}, positions(80, 0), positions(80, 0)});
}

TEST(FlashAttentionEmulated, RingStepWhoseFirstQueryTileSeesNoKey) {
  expect_kernels_match_cpu_attention<64, float>(
      {{1, 100, 70, 2, 2, 64}, positions(100, 0), positions(70, 64)});
}

TEST(FlashAttentionEmulated, PositionsInAnyOrder) {
  std::vector<int32_t> q_pos = positions(67, 0, 7);
  q_pos[5] = -1;  // a query that sees no key
  expect_kernels_match_cpu_attention<64, uint16_t>(
      {{1, 67, 67, 2, 1, 64}, q_pos, positions(67, 0, 5)});
}

// Blocks of a kernel that one SM holds at once, as far as shared memory decides (every block
// also takes 1 KiB the runtime reserves).
int blocks_by_shared_memory(size_t block_bytes, size_t sm_bytes) {
  return static_cast<int>(sm_bytes / (block_bytes + 1024));
}

// Occupancy is decided by the shared memory these layouts carve and by the kernels' registers
// (ptxas for sm_90, 128 threads a block: backward 254 at D 128 and 166 at D 64, forward 168 and
// 128, which allow 2, 3, 3 and 4 blocks of 64 K registers). Shared memory must not allow fewer:
// at D 128 the backward must leave room for a second block on an sm_90 (228 KiB), the forward
// for a third, or each SM runs 4 or 8 warps only.
TEST(FlashAttentionEmulated, SharedMemoryLetsBlocksShareAnSm) {
  constexpr size_t kSm90 = 228 * 1024, kSm80 = 164 * 1024;
  EXPECT_EQ(blocks_by_shared_memory(shared_bytes<BackwardShared, 128>(), kSm90), 2);
  EXPECT_EQ(blocks_by_shared_memory(shared_bytes<BackwardShared, 64>(), kSm90), 3);
  EXPECT_EQ(blocks_by_shared_memory(shared_bytes<ForwardShared, 128>(), kSm90), 3);
  EXPECT_GE(blocks_by_shared_memory(shared_bytes<ForwardShared, 64>(), kSm90), 4);
  EXPECT_EQ(blocks_by_shared_memory(shared_bytes<ForwardShared, 128>(), kSm80), 2);
}

}  // namespace
}  // namespace moefold::cuda
