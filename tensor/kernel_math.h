// Element-wise kernel math shared by every backend: each function is `__host__ __device__` under
// nvcc, so the CPU kernels and the CUDA kernels compute the same formula and the CPU tests check
// the math that the GPU runs (issue: "testable without a GPU"). Branch-free where it sits in hot
// loops, so the CPU loops over it vectorise.
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOEFOLD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MOEFOLD_HOST_DEVICE inline
#endif

namespace moefold {

// exp(x) for float with about 1 ulp error (Cephes polynomial after range reduction to
// [-ln2/2, ln2/2]); exactly 0 below −87.3 (so exp(−inf) = 0) and saturating (finite) above 88.3.
MOEFOLD_HOST_DEVICE float exp_approx(float x) {
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

// SwiGLU: out = silu(g)·u, silu(g) = g·σ(g).
MOEFOLD_HOST_DEVICE float swiglu_value(float gate, float up) {
  return gate / (1.0f + exp_approx(-gate)) * up;
}

// d out/d gate and d out/d up, given d out: d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g))).
MOEFOLD_HOST_DEVICE void swiglu_gradient(float dout, float gate, float up, float* dgate,
                                         float* dup) {
  const float sig = 1.0f / (1.0f + exp_approx(-gate));
  *dgate = dout * up * sig * (1.0f + gate * (1.0f - sig));
  *dup = dout * gate * sig;
}

// The per-step scalars of AdamW (MODEL.md): step_size = lr / (1 − β1ᵗ),
// inv_sqrt_bias2 = 1 / sqrt(1 − β2ᵗ), decay = lr·wd (0 for norm weights).
struct AdamWScalars {
  float beta1, beta2, step_size, inv_sqrt_bias2, eps, decay;
};

// One element of AdamW: m and v are updated in place, theta becomes the new parameter.
MOEFOLD_HOST_DEVICE void adamw_update(float* theta, float g, float* m, float* v,
                                      const AdamWScalars& s) {
  *m = s.beta1 * *m + (1.0f - s.beta1) * g;
  *v = s.beta2 * *v + (1.0f - s.beta2) * g * g;
  const float denom = sqrtf(*v) * s.inv_sqrt_bias2 + s.eps;
  *theta -= s.step_size * *m / denom + s.decay * *theta;
}

// bfloat16 storage: the upper 16 bits of a float32. Rounding is to nearest, ties to even; NaN
// stays NaN (quiet).
MOEFOLD_HOST_DEVICE uint16_t float_to_bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

MOEFOLD_HOST_DEVICE float bf16_bits_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
}

}  // namespace moefold
