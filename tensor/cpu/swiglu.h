// SwiGLU activation: out = silu(gate) · up, silu(z) = z·σ(z). Element-wise over n elements.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// out may alias gate or up.
void swiglu_forward(const float* gate_NF, const float* up_NF, float* out_NF, int64_t n);
// dgate, dup overwritten. dgate may alias gate and dup may alias up (each element is read
// before it is written).
void swiglu_backward(const float* dout_NF, const float* gate_NF, const float* up_NF,
                     float* dgate_NF, float* dup_NF, int64_t n);

}  // namespace moefold::cpu
