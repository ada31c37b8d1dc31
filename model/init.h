// Layout-independent initialisation (MODEL.md "Initialisation").
//
// Generator: each element's value is a pure function of (seed, tensor name, global element index).
//   key     = the 64-bit seed as two 32-bit words (low, high);
//   counter = (index low, index high, h low, h high), where index is the element's row-major
//             index in the GLOBAL (unsharded) tensor and h = 64-bit FNV-1a hash of the name;
//   (x0, x1, x2, x3) = Philox4x32-10(counter, key)  (Salmon et al., SC'11, Random123 constants);
//   u1 = (x0 + 0.5) / 2^32, u2 = (x1 + 0.5) / 2^32  (both strictly inside (0, 1));
//   value = std · sqrt(−2 ln u1) · cos(2π u2)       (Box–Muller, computed in double, then float).
// So a shard computes exactly the numbers of the same slice of the full tensor.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "model/parameter.h"

namespace moefold {

uint64_t fnv1a_64(std::string_view text);
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);
// The standard normal of one element (before multiplying by σ).
double standard_normal_at(uint64_t seed, uint64_t name_hash, uint64_t global_index);

// Fills `local` (layout.local_shape, row-major) per `kind`; σ = std for kNormal.
void init_tensor(const TensorLayout& layout, InitKind kind, float std, uint64_t seed, float* local);

}  // namespace moefold
