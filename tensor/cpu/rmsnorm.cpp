#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/rmsnorm.h"

#include <cmath>

#include "tensor/cpu/vec_math.h"
#include "tensor/row_math.h"

namespace moefold::cpu {
namespace {

// Σ a·b·c over n, in kVecLanes partial sums.
inline float triple_dot(const float* a, const float* b, const float* c, int64_t n) {
  float acc[kVecLanes] = {};
  int64_t i = 0;
  for (; i + kVecLanes <= n; i += kVecLanes) {
    for (int64_t j = 0; j < kVecLanes; ++j) acc[j] += a[i + j] * b[i + j] * c[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i] * c[i];
  for (int64_t j = 0; j < kVecLanes; ++j) sum += acc[j];
  return sum;
}

}  // namespace

MOEFOLD_ISA_CLONES
void rmsnorm_forward(const float* x_NH, const float* w_H, float* y_NH, float* rstd_N, int64_t N,
                     int64_t H, float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const float* x = x_NH + n * H;
    float* y = y_NH + n * H;
    float sum_sq[kVecLanes] = {};
    int64_t h = 0;
    for (; h + kVecLanes <= H; h += kVecLanes) {
      for (int64_t j = 0; j < kVecLanes; ++j) sum_sq[j] += x[h + j] * x[h + j];
    }
    float total = 0.0f;
    for (; h < H; ++h) total += x[h] * x[h];
    for (int64_t j = 0; j < kVecLanes; ++j) total += sum_sq[j];
    const float rstd = rmsnorm_rstd(total, H, eps);
    rstd_N[n] = rstd;
    for (h = 0; h < H; ++h) y[h] = x[h] * rstd * w_H[h];
  }
}

// With x̂ = x·rstd and g = dy ⊙ w: dx = rstd · (g − x̂ · mean(g ⊙ x̂)), dw += dy ⊙ x̂
// (row_math.h, shared with the CUDA kernel).
MOEFOLD_ISA_CLONES
void rmsnorm_backward(const float* dy_NH, const float* x_NH, const float* w_H,
                      const float* rstd_N, float* dx_NH, float* dw_H, int64_t N, int64_t H,
                      bool accumulate_dx) {
  for (int64_t n = 0; n < N; ++n) {
    const float* dy = dy_NH + n * H;
    const float* x = x_NH + n * H;
    float* dx = dx_NH + n * H;
    const float rstd = rstd_N[n];
    const float coeff = rmsnorm_backward_coeff(triple_dot(dy, w_H, x, H), rstd, H);
    if (accumulate_dx) {
      for (int64_t h = 0; h < H; ++h) dx[h] += rmsnorm_dx(dy[h], w_H[h], x[h], rstd, coeff);
    } else {  // never reads dx, which may hold garbage
      for (int64_t h = 0; h < H; ++h) dx[h] = rmsnorm_dx(dy[h], w_H[h], x[h], rstd, coeff);
    }
    for (int64_t h = 0; h < H; ++h) dw_H[h] += dy[h] * x[h] * rstd;
  }
}

}  // namespace moefold::cpu
