// RMSNorm over the last dim: y = x / sqrt(mean(x²) + eps) · w  (MODEL.md).
#pragma once

#include <cstdint>

namespace moefold::cpu {

// y (N,H); rstd (N) = 1/sqrt(mean(x²)+eps) is saved for backward. y may alias x.
void rmsnorm_forward(const float* x_NH, const float* w_H, float* y_NH, float* rstd_N, int64_t N,
                     int64_t H, float eps);
// dx (N,H): overwritten, or added to dx when accumulate_dx (residual stream). dw (H) += always.
// dx must not alias dy or x.
void rmsnorm_backward(const float* dy_NH, const float* x_NH, const float* w_H,
                      const float* rstd_N, float* dx_NH, float* dw_H, int64_t N, int64_t H,
                      bool accumulate_dx);

}  // namespace moefold::cpu
