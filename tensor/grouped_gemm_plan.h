// The grouped expert linears (tensor/backend.h) as the per-group arrays of one
// cublasGemmGroupedBatchedEx call: each non-empty expert is one group of one problem, mapped to
// cuBLAS's column-major order by tensor/blas_layout.h. Pure host code, so that the CPU tests run
// the plan with a column-major reference GEMM and compare it with the CPU backend's grouped ops.
// Empty experts are left out: their forward and dx rows do not exist, and their dW must stay as
// it is (dW always accumulates).
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/backend.h"

namespace moefold {

enum class GroupedLinear {
  kForward,     // y[rows g] (rows,O) = x[rows g] (rows,I) · w[g]ᵀ         a = x,  b = w, c = y
  kBackwardDx,  // dx[rows g] (rows,I) = dy[rows g] · w[g] (+ dx)           a = dy, b = w, c = dx
  kBackwardDw,  // dw[g] (O,I) += dy[rows g]ᵀ · x[rows g]                   a = dy, b = x, c = dw
};

// Arrays in cublasGemmGroupedBatchedEx's argument order: "first" is cuBLAS's A (moefold's B),
// "second" is cuBLAS's B (moefold's A); entry i is group i.
struct GroupedGemmPlan {
  std::vector<uint8_t> trans_first, trans_second;
  std::vector<int> m, n, k, ld_first, ld_second, ldc;
  std::vector<float> alpha, beta;
  std::vector<int> group_size;  // 1 each
  std::vector<const void*> first, second;
  std::vector<void*> c;
  // Every matrix pointer on a 16-byte boundary, which cuBLAS wants for bf16 operands.
  bool aligned_16 = true;

  int groups() const { return static_cast<int>(m.size()); }
};

// offsets (host, G+1 entries) as tensor/backend.h's grouped ops take them; I, O > 0.
// `accumulate` adds into dx (kBackwardDx only).
GroupedGemmPlan plan_grouped_linear(GroupedLinear op, GemmInput a, GemmInput b, GemmOutput c,
                                    const int64_t* offsets, int64_t G, int64_t I, int64_t O,
                                    bool accumulate);

}  // namespace moefold
