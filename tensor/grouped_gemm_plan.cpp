#include "tensor/grouped_gemm_plan.h"

#include <climits>
#include <cstdint>
#include <type_traits>

#include "tensor/blas_layout.h"
#include "tensor/check.h"

namespace moefold {
namespace {

// One expert's GEMM, row-major: C (M,N) = op(A)·op(B) + beta·C, each operand at an element
// offset of its tensor.
struct RowMajorGemm {
  bool trans_a, trans_b;
  int64_t M, N, K, lda, ldb, ldc;
  int64_t a_offset, b_offset, c_offset;
  float beta;
};

RowMajorGemm expert_gemm(GroupedLinear op, int64_t g, int64_t begin, int64_t rows, int64_t I,
                         int64_t O, bool accumulate) {
  if (op == GroupedLinear::kForward) {
    return {false, true, rows, O, I, I, I, O, begin * I, g * O * I, begin * O, 0.0f};
  }
  if (op == GroupedLinear::kBackwardDx) {
    return {false, false, rows, I, O, O, I, I, begin * O, g * O * I, begin * I,
            accumulate ? 1.0f : 0.0f};
  }
  return {true, false, O, I, rows, O, I, I, begin * O, begin * I, g * O * I, 1.0f};
}

int as_blas_int(int64_t value) {
  MOEFOLD_CHECK(value >= 0 && value <= INT_MAX, "cuBLAS dimension out of range: " << value);
  return static_cast<int>(value);
}

template <typename Pointer>
Pointer element(Pointer base, int64_t offset, DType dtype) {
  using Byte = std::conditional_t<std::is_const_v<std::remove_pointer_t<Pointer>>, const char,
                                  char>;
  return static_cast<Byte*>(base) + offset * static_cast<int64_t>(dtype_size(dtype));
}

bool on_16_bytes(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

GroupedGemmPlan plan_grouped_linear(GroupedLinear op, GemmInput a, GemmInput b, GemmOutput c,
                                    const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                    bool accumulate) {
  MOEFOLD_CHECK(I > 0 && O > 0, "grouped GEMM sizes must be positive: I " << I << ", O " << O);
  MOEFOLD_CHECK(offsets[0] == 0, "grouped GEMM offsets must start at 0");
  GroupedGemmPlan plan;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin;
    MOEFOLD_CHECK(rows >= 0, "grouped GEMM offsets decrease at group " << g);
    if (rows == 0) continue;
    const RowMajorGemm e = expert_gemm(op, g, begin, rows, I, O, accumulate);
    const ColumnMajorGemm cm =
        column_major_gemm(e.trans_a, e.trans_b, e.M, e.N, e.K, e.lda, e.ldb, e.ldc);
    plan.trans_first.push_back(cm.trans_first);
    plan.trans_second.push_back(cm.trans_second);
    plan.m.push_back(as_blas_int(cm.m));
    plan.n.push_back(as_blas_int(cm.n));
    plan.k.push_back(as_blas_int(cm.k));
    plan.ld_first.push_back(as_blas_int(cm.ld_first));
    plan.ld_second.push_back(as_blas_int(cm.ld_second));
    plan.ldc.push_back(as_blas_int(cm.ldc));
    plan.alpha.push_back(1.0f);
    plan.beta.push_back(e.beta);
    plan.group_size.push_back(1);
    plan.first.push_back(element(b.data, e.b_offset, b.dtype));
    plan.second.push_back(element(a.data, e.a_offset, a.dtype));
    plan.c.push_back(element(c.data, e.c_offset, c.dtype));
    plan.aligned_16 = plan.aligned_16 && on_16_bytes(plan.first.back()) &&
                      on_16_bytes(plan.second.back()) && on_16_bytes(plan.c.back());
  }
  return plan;
}

}  // namespace moefold
