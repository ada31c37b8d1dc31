// Rotary position embedding, rotate-half form (MODEL.md): for i in [0, d/2),
// θ = p · base^(−2i/d), out = concat(x1·cosθ − x2·sinθ, x2·cosθ + x1·sinθ), x1 = x[:d/2].
#pragma once

#include <cstdint>

namespace moefold::cpu {

// x, y (N, heads, d); positions (N) is each token's position in its sequence (global positions,
// so a context-parallel shard passes its own). y may equal x (in place). d must be even.
void rope_forward(const float* x, float* y, const int32_t* positions_N, int64_t N, int64_t heads,
                  int64_t d, float base);
// dx = inverse rotation of dy (rotation by −θ); overwritten. dx may equal dy (in place).
void rope_backward(const float* dy, float* dx, const int32_t* positions_N, int64_t N,
                   int64_t heads, int64_t d, float base);

}  // namespace moefold::cpu
