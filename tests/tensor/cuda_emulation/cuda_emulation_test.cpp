// The emulation itself: WMMA products in each operand layout, shuffles and launch_utils.cuh's
// block reductions compute what CUDA specifies, and the mistakes it exists to catch are reported
// (divergent barriers, misaligned WMMA operands, another lane's result read before a
// __syncwarp) or shown (blocks that depend on each other's order).
#include "tests/tensor/cuda_emulation/cuda_emulation.h"
// The emulation first: launch_utils.cuh is written for nvcc's dialect.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/cuda/launch_utils.cuh"
#include "tensor/kernel_math.h"

namespace moefold::cuda {
namespace {

using cuda_emulation::EmulationError;
using cuda_emulation::launch;
namespace wmma = nvcuda::wmma;

using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out (16 × 16, row-major, ld 20) = a · b with a row- or column-major, b row- or column-major.
template <class LayoutA, class LayoutB>
void product_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> fb;
  FragC c;
  wmma::fill_fragment(c, 1.0f);
  wmma::load_matrix_sync(fa, a, 24);
  wmma::load_matrix_sync(fb, b, 24);
  wmma::mma_sync(c, fa, fb, c);
  wmma::store_matrix_sync(out, c, 20, wmma::mem_row_major);
}

template <class LayoutA, class LayoutB>
void expect_product(bool a_row_major, bool b_row_major) {
  // Both operands (16 × 24 storage, ld 24) hold small integers: the products are exact.
  alignas(32) __nv_bfloat16 a[16 * 24], b[16 * 24];
  for (int i = 0; i < 16 * 24; ++i) {
    a[i].bits = float_to_bf16_bits(static_cast<float>(i % 7 - 3));
    b[i].bits = float_to_bf16_bits(static_cast<float>(i % 5 - 2));
  }
  alignas(32) float out[16 * 20] = {};
  launch(dim3(1), dim3(32), 0, product_kernel<LayoutA, LayoutB>, a, b, out);
  const auto at = [](const __nv_bfloat16* m, int r, int c, bool row_major) {
    return bf16_bits_to_float(m[row_major ? r * 24 + c : c * 24 + r].bits);
  };
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      float expected = 1.0f;
      for (int k = 0; k < 16; ++k) expected += at(a, r, k, a_row_major) * at(b, k, c, b_row_major);
      EXPECT_EQ(out[r * 20 + c], expected) << "(" << r << ", " << c << ")";
    }
  }
}

TEST(CudaEmulation, WmmaProductsFollowEachOperandLayout) {
  expect_product<wmma::row_major, wmma::row_major>(true, true);
  expect_product<wmma::row_major, wmma::col_major>(true, false);
  expect_product<wmma::col_major, wmma::row_major>(false, true);
  expect_product<wmma::col_major, wmma::col_major>(false, false);
}

void block_reductions_kernel(const float* x, float* sums, float* maxima) {
  __shared__ float shared[32];
  const float value = x[blockIdx.x * blockDim.x + threadIdx.x];
  const float sum = block_sum(value, shared);
  const float max = block_max(value, shared);
  if (threadIdx.x == 7) {  // every thread holds the totals
    sums[blockIdx.x] = sum;
    maxima[blockIdx.x] = max;
  }
}

TEST(CudaEmulation, BlockReductionsGiveEveryThreadTheTotal) {
  std::vector<float> x(3 * 96);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101);
  std::vector<float> sums(3), maxima(3);
  launch(dim3(3), dim3(96), 0, block_reductions_kernel, x.data(), sums.data(), maxima.data());
  for (int b = 0; b < 3; ++b) {
    float sum = 0.0f, max = -INFINITY;
    for (int t = 0; t < 96; ++t) {
      sum += x[b * 96 + t];
      max = std::max(max, x[b * 96 + t]);
    }
    EXPECT_EQ(sums[b], sum);
    EXPECT_EQ(maxima[b], max);
  }
}

void early_return_kernel(int* out) {
  if (threadIdx.x == 40) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

void divergent_warp_kernel(int* out) {
  if (threadIdx.x % 2 == 0) __syncwarp();
  out[threadIdx.x] = 1;
  __syncwarp();
}

TEST(CudaEmulation, DivergentBarriersAreReported) {
  std::vector<int> out(64);
  EXPECT_THAT([&] { launch(dim3(1), dim3(64), 0, early_return_kernel, out.data()); },
              ::testing::ThrowsMessage<EmulationError>(
                  ::testing::HasSubstr("thread 40 (warp 1, block 0,0,0) returned")));
  EXPECT_THAT([&] { launch(dim3(1), dim3(32), 0, divergent_warp_kernel, out.data()); },
              ::testing::ThrowsMessage<EmulationError>(::testing::HasSubstr("divergent warp")));
}

void misaligned_load_kernel(const __nv_bfloat16* a) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + 8, 24);  // 16 bytes past a 32-byte boundary
}

TEST(CudaEmulation, MisalignedWmmaOperandsAreReported) {
  alignas(32) __nv_bfloat16 a[24 * 24] = {};
  EXPECT_THAT([&] { launch(dim3(1), dim3(32), 0, misaligned_load_kernel, a); },
              ::testing::ThrowsMessage<EmulationError>(
                  ::testing::HasSubstr("WMMA pointer not 256-bit aligned")));
}

// Each lane reads its row's first element of a stored product: with `sync`, after a __syncwarp.
void read_after_store_kernel(float* scratch, float* out, bool sync) {
  FragC c;
  wmma::fill_fragment(c, 2.0f);
  wmma::store_matrix_sync(scratch, c, 16, wmma::mem_row_major);
  if (sync) __syncwarp();
  out[threadIdx.x] = scratch[(threadIdx.x % 16) * 16];
}

TEST(CudaEmulation, AnotherLanesStoredResultShowsOnlyAfterASyncwarp) {
  alignas(32) float scratch[256];
  std::vector<float> out(32);
  for (bool sync : {true, false}) {
    std::fill(std::begin(scratch), std::end(scratch), -1.0f);
    launch(dim3(1), dim3(32), 0, read_after_store_kernel, scratch, out.data(), sync);
    // Row r's first element is lane (16 r) % 32's (lane 0 or 16): without the __syncwarp, a
    // lane that runs before the element's owner reads the old value.
    const auto stale = std::count(out.begin(), out.end(), -1.0f);
    if (sync) {
      EXPECT_EQ(stale, 0);
    } else {
      EXPECT_GT(stale, 0);
    }
  }
}

void dynamic_shared_kernel(int* out) {
  auto* shared = reinterpret_cast<int*>(dynamic_shared_memory());
  shared[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = shared[blockDim.x - 1 - threadIdx.x];
}

TEST(CudaEmulation, BlocksShareTheirDynamicSharedMemory) {
  std::vector<int> out(2 * 64);
  launch(dim3(2), dim3(64), 64 * sizeof(int), dynamic_shared_kernel, out.data());
  for (int i = 0; i < 128; ++i) EXPECT_EQ(out[i], 64 - i % 64);
}

// Each block notes when it ran (blocks run one after another, so a plain counter counts them).
void arrival_kernel(int* order, int* arrivals) {
  if (threadIdx.x == 0) order[blockIdx.y * gridDim.x + blockIdx.x] = (*arrivals)++;
}

// A GPU runs blocks in no set order: of two launches one runs them first to last and the other
// last to first, so a block that reads another's writes within one kernel shows.
TEST(CudaEmulation, BlocksRunInNoSetOrder) {
  std::vector<int> first(6), second(6);
  int arrivals = 0;
  launch(dim3(3, 2), dim3(32), 0, arrival_kernel, first.data(), &arrivals);
  arrivals = 0;
  launch(dim3(3, 2), dim3(32), 0, arrival_kernel, second.data(), &arrivals);
  if (first[0] != 0) std::swap(first, second);
  EXPECT_EQ(first, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(second, (std::vector<int>{5, 4, 3, 2, 1, 0}));
}

}  // namespace
}  // namespace moefold::cuda
