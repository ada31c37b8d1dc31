// Small vectorised helpers shared by the CPU kernels. The build targets x86-64-v2 (SSE4.2);
// functions marked MOEFOLD_ISA_CLONES are compiled once per ISA level (AVX-512, AVX2, baseline)
// and the best one is picked at load time, so hot element-wise loops use the machine's full
// width. A .cpp using it also starts with
// `#pragma GCC optimize("tree-vectorize", "no-trapping-math")`: at -O2 GCC 12 only
// vectorises trivially cheap loops, and with trapping math it will not turn the selects of
// exp_approx into blends (results are the same; only FP exception flags differ). Reductions keep
// kVecLanes partial sums so they vectorise without reassociation flags.
#pragma once

#include <cstdint>
#include <cstring>

#include "tensor/kernel_math.h"

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer instruments the clones' resolver, which the loader runs before TSan starts.
#define MOEFOLD_ISA_CLONES
#else
#define MOEFOLD_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

namespace moefold::cpu {

constexpr int64_t kVecLanes = 16;

// out[i] = exp(x[i] − shift); returns Σ out. out may equal x.
float exp_shifted_sum(const float* x, float shift, float* out, int64_t n);
// Largest element (−inf for n == 0).
float max_value(const float* x, int64_t n);
// Σ a[i]·b[i].
float dot(const float* a, const float* b, int64_t n);
// y[i] = a·y[i].
void scale_in_place(float* y, float a, int64_t n);

}  // namespace moefold::cpu
