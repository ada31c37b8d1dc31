// Small vectorised helpers shared by the CPU kernels. The build targets x86-64-v2 (SSE4.2); the
// functions in vec_math.cpp are compiled once per ISA level (AVX-512, AVX2, baseline) and the
// best one is picked at load time, so hot element-wise loops use the machine's full width.
#pragma once

#include <cstdint>
#include <cstring>

namespace moefold::cpu {

// exp(x) for float with about 1 ulp error (Cephes polynomial after range reduction to
// [-ln2/2, ln2/2]); exactly 0 below −87.3 (so exp(−inf) = 0). Branch-free so that loops over it
// vectorise.
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
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3f ? 0.0f : p * scale;
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
