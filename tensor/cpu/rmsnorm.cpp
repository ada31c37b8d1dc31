#include "tensor/cpu/rmsnorm.h"

#include <cmath>

namespace moefold::cpu {

void rmsnorm_forward(const float* x_NH, const float* w_H, float* y_NH, float* rstd_N, int64_t N,
                     int64_t H, float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x = x_NH + n * H;
    float* y = y_NH + n * H;
    float sum_sq = 0.0f;
    for (int64_t h = 0; h < H; ++h) sum_sq += x[h] * x[h];
    const float rstd = 1.0f / std::sqrt(sum_sq / static_cast<float>(H) + eps);
    rstd_N[n] = rstd;
    for (int64_t h = 0; h < H; ++h) y[h] = x[h] * rstd * w_H[h];
  }
}

// With x̂ = x·rstd and g = dy ⊙ w: dx = rstd · (g − x̂ · mean(g ⊙ x̂)), dw += dy ⊙ x̂.
void rmsnorm_backward(const float* dy_NH, const float* x_NH, const float* w_H,
                      const float* rstd_N, float* dx_NH, float* dw_H, int64_t N, int64_t H,
                      bool accumulate_dx) {
  for (int64_t n = 0; n < N; ++n) {
    const float* dy = dy_NH + n * H;
    const float* x = x_NH + n * H;
    float* dx = dx_NH + n * H;
    const float rstd = rstd_N[n];
    float dot = 0.0f;  // Σ dy·w·x
    for (int64_t h = 0; h < H; ++h) dot += dy[h] * w_H[h] * x[h];
    const float coeff = dot * rstd * rstd / static_cast<float>(H);
    if (accumulate_dx) {
      for (int64_t h = 0; h < H; ++h) dx[h] += rstd * (dy[h] * w_H[h] - x[h] * coeff);
    } else {
      for (int64_t h = 0; h < H; ++h) dx[h] = rstd * (dy[h] * w_H[h] - x[h] * coeff);
    }
    for (int64_t h = 0; h < H; ++h) dw_H[h] += dy[h] * x[h] * rstd;
  }
}

}  // namespace moefold::cpu
