#include "tensor/cpu/swiglu.h"

#include <cmath>

namespace moefold::cpu {

void swiglu_forward(const float* gate_NF, const float* up_NF, float* out_NF, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate_NF[i];
    out_NF[i] = g / (1.0f + std::exp(-g)) * up_NF[i];
  }
}

// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g))).
void swiglu_backward(const float* dout_NF, const float* gate_NF, const float* up_NF,
                     float* dgate_NF, float* dup_NF, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate_NF[i], u = up_NF[i], dout = dout_NF[i];
    const float sig = 1.0f / (1.0f + std::exp(-g));
    const float silu = g * sig;
    dgate_NF[i] = dout * u * sig * (1.0f + g * (1.0f - sig));
    dup_NF[i] = dout * silu;
  }
}

}  // namespace moefold::cpu
