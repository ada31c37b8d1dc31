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

#define MOEFOLD_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace moefold::cpu {

constexpr int64_t kVecLanes = 16;

// exp(x) for float with about 1 ulp error (Cephes polynomial after range reduction to
// [-ln2/2, ln2/2]); exactly 0 below −87.3 (so exp(−inf) = 0) and saturating (finite) above 88.3.
// Branch-free so that loops over it vectorise.
inline float exp_approx(float x) {
  const float clamped = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // Round to nearest via the 1.5·2²³ trick (vectorisable, unlike a rounding call).
  const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = clamped - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Below the range the scale factor's bits are all zero, i.e. scale = 0.
  const int32_t bits = x < -87.3f ? 0 : (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// out[i] = exp(x[i] − shift); returns Σ out. out may equal x.
float exp_shifted_sum(const float* x, float shift, float* out, int64_t n);
// Largest element (−inf for n == 0).
float max_value(const float* x, int64_t n);
// Σ a[i]·b[i].
float dot(const float* a, const float* b, int64_t n);
// y[i] = a·y[i].
void scale_in_place(float* y, float a, int64_t n);

}  // namespace moefold::cpu
