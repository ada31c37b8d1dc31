#include "tensor/cpu/rope.h"

#include <cmath>
#include <vector>

#include "tensor/check.h"

namespace moefold::cpu {
namespace {

// Rotates each (x1[i], x2[i]) pair of every head by angle sign·θ_i(p). Angles are computed in
// double once per token and shared by its heads.
void rotate(const float* x, float* y, const int32_t* positions_N, int64_t N, int64_t heads,
            int64_t d, float base, float sign) {
  MOEFOLD_CHECK(d % 2 == 0, "RoPE head dim must be even, got " << d);
  const int64_t half = d / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(base), -2.0 * static_cast<double>(i) / d);
  }
  std::vector<float> cos_i(half), sin_i(half);
  for (int64_t n = 0; n < N; ++n) {
    const double p = positions_N[n];
    for (int64_t i = 0; i < half; ++i) {
      const double theta = p * inv_freq[i];
      cos_i[i] = static_cast<float>(std::cos(theta));
      sin_i[i] = sign * static_cast<float>(std::sin(theta));
    }
    for (int64_t h = 0; h < heads; ++h) {
      const float* xr = x + (n * heads + h) * d;
      float* yr = y + (n * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = xr[i], x2 = xr[i + half];
        yr[i] = x1 * cos_i[i] - x2 * sin_i[i];
        yr[i + half] = x2 * cos_i[i] + x1 * sin_i[i];
      }
    }
  }
}

}  // namespace

void rope_forward(const float* x, float* y, const int32_t* positions_N, int64_t N, int64_t heads,
                  int64_t d, float base) {
  rotate(x, y, positions_N, N, heads, d, base, 1.0f);
}

void rope_backward(const float* dy, float* dx, const int32_t* positions_N, int64_t N,
                   int64_t heads, int64_t d, float base) {
  rotate(dy, dx, positions_N, N, heads, d, base, -1.0f);
}

}  // namespace moefold::cpu
