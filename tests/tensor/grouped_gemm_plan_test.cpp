// The grouped-GEMM plan of the CUDA backend's expert linears (tensor/grouped_gemm_plan.h),
// executed on host buffers by a column-major reference GEMM with cuBLAS's meaning of its
// arguments, against the CPU backend's grouped ops: uneven experts, empty ones (first, middle,
// last) and all empty, forward, dx fresh and accumulating, dW accumulating.
#include "tensor/grouped_gemm_plan.h"

#include <gtest/gtest.h>

#include <vector>

#include "tensor/check.h"
#include "tensor/cpu/gemm.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::expect_close;
using testing::random_floats;

// cublasGemmGroupedBatchedEx over float32 host matrices, in float64: for each group,
// C(m,n) = alpha·op(first)(m,k)·op(second)(k,n) + beta·C, element (i,j) at i + j·ld.
void run_plan(const GroupedGemmPlan& plan) {
  for (int g = 0; g < plan.groups(); ++g) {
    ASSERT_EQ(plan.group_size[g], 1);
    const auto* X = static_cast<const float*>(plan.first[g]);
    const auto* Y = static_cast<const float*>(plan.second[g]);
    auto* C = static_cast<float*>(plan.c[g]);
    const int ldx = plan.ld_first[g], ldy = plan.ld_second[g], ldc = plan.ldc[g];
    for (int i = 0; i < plan.m[g]; ++i) {
      for (int j = 0; j < plan.n[g]; ++j) {
        double acc = 0.0;
        for (int p = 0; p < plan.k[g]; ++p) {
          const double x = plan.trans_first[g] ? X[p + i * ldx] : X[i + p * ldx];
          const double y = plan.trans_second[g] ? Y[j + p * ldy] : Y[p + j * ldy];
          acc += x * y;
        }
        C[i + j * ldc] = static_cast<float>(plan.alpha[g] * acc + plan.beta[g] * C[i + j * ldc]);
      }
    }
  }
}

GemmInput in(const std::vector<float>& v) { return {v.data(), DType::kFloat32}; }
GemmOutput out(std::vector<float>& v) { return {v.data(), DType::kFloat32}; }

int non_empty(const std::vector<int64_t>& offsets) {
  int count = 0;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) count += offsets[g + 1] > offsets[g];
  return count;
}

void expect_plan_matches_cpu(const std::vector<int64_t>& offsets, int64_t I, int64_t O) {
  const int64_t G = static_cast<int64_t>(offsets.size()) - 1, N = offsets[G];
  const auto x = random_floats(N * I, 1), dy = random_floats(N * O, 2);
  const auto w = random_floats(G * O * I, 3);
  const auto dx_start = random_floats(N * I, 4), dw_start = random_floats(G * O * I, 5);

  std::vector<float> y_plan(N * O, 7.0f), y_cpu(N * O, 7.0f);
  const GroupedGemmPlan forward = plan_grouped_linear(GroupedLinear::kForward, in(x), in(w),
                                                      out(y_plan), offsets.data(), G, I, O, false);
  EXPECT_EQ(forward.groups(), non_empty(offsets));
  run_plan(forward);
  cpu::grouped_linear_forward(x.data(), w.data(), y_cpu.data(), offsets.data(), G, I, O);
  expect_close(y_plan, y_cpu, 1e-5, 1e-5, "forward y");

  for (bool accumulate : {false, true}) {
    std::vector<float> dx_plan = dx_start, dx_cpu = dx_start;
    run_plan(plan_grouped_linear(GroupedLinear::kBackwardDx, in(dy), in(w), out(dx_plan),
                                 offsets.data(), G, I, O, accumulate));
    cpu::grouped_linear_backward_dx(dy.data(), w.data(), dx_cpu.data(), offsets.data(), G, I, O,
                                    accumulate);
    expect_close(dx_plan, dx_cpu, 1e-5, 1e-5, accumulate ? "dx accumulated" : "dx");
  }

  std::vector<float> dw_plan = dw_start, dw_cpu = dw_start;
  run_plan(plan_grouped_linear(GroupedLinear::kBackwardDw, in(dy), in(x), out(dw_plan),
                               offsets.data(), G, I, O, false));
  cpu::grouped_linear_backward_dw(dy.data(), x.data(), dw_cpu.data(), offsets.data(), G, I, O);
  expect_close(dw_plan, dw_cpu, 1e-5, 1e-5, "dw");
  for (int64_t g = 0; g < G; ++g) {  // an empty expert's gradient is left exactly as it was
    if (offsets[g + 1] > offsets[g]) continue;
    for (int64_t e = g * O * I; e < (g + 1) * O * I; ++e) EXPECT_EQ(dw_plan[e], dw_start[e]);
  }
}

TEST(GroupedGemmPlan, UnevenExpertsWithEmptyOnesMatchTheCpuBackend) {
  // Experts 0, 2 and 7 are empty (first, middle, last); the others hold 1 to 9 rows.
  expect_plan_matches_cpu({0, 0, 3, 3, 12, 13, 17, 22, 22}, 6, 5);
  expect_plan_matches_cpu({0, 9, 10, 10, 14}, 3, 8);
}

TEST(GroupedGemmPlan, AllExpertsEmptyIsAnEmptyPlan) {
  const std::vector<int64_t> offsets = {0, 0, 0, 0};
  expect_plan_matches_cpu(offsets, 4, 3);
  std::vector<float> dw(3 * 4 * 3, 1.0f);
  EXPECT_EQ(plan_grouped_linear(GroupedLinear::kBackwardDw, {nullptr, DType::kFloat32},
                                {nullptr, DType::kFloat32}, out(dw), offsets.data(), 3, 4, 3,
                                false)
                .groups(),
            0);
}

TEST(GroupedGemmPlan, Bf16PointersAdvanceByTwoBytesAndAlignmentIsReported) {
  const int64_t G = 3, I = 16, O = 24;
  const std::vector<int64_t> offsets = {0, 5, 5, 8};
  alignas(16) static uint16_t x[8 * I], w[G * O * I], y[8 * O];
  const GroupedGemmPlan plan =
      plan_grouped_linear(GroupedLinear::kForward, {x, DType::kBFloat16}, {w, DType::kBFloat16},
                          {y, DType::kBFloat16}, offsets.data(), G, I, O, false);
  ASSERT_EQ(plan.groups(), 2);
  EXPECT_EQ(plan.second[1], x + 5 * I);  // the third expert's rows; the second is empty
  EXPECT_EQ(plan.first[1], w + 2 * O * I);
  EXPECT_EQ(plan.c[1], y + 5 * O);
  EXPECT_TRUE(plan.aligned_16);
  // Rows of 3 bf16 elements: the second expert's x starts 30 bytes in.
  const GroupedGemmPlan odd =
      plan_grouped_linear(GroupedLinear::kForward, {x, DType::kBFloat16}, {w, DType::kBFloat16},
                          {y, DType::kBFloat16}, offsets.data(), G, 3, O, false);
  EXPECT_FALSE(odd.aligned_16);
}

TEST(GroupedGemmPlan, DecreasingOffsetsAreAnError) {
  const std::vector<int64_t> offsets = {0, 4, 2};
  std::vector<float> buffer(64);
  EXPECT_THROW(plan_grouped_linear(GroupedLinear::kForward, in(buffer), in(buffer), out(buffer),
                                   offsets.data(), 2, 2, 2, false),
               InternalError);
}

}  // namespace
}  // namespace moefold
