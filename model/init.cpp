#include "model/init.h"

#include <cmath>

#include "tensor/check.h"

namespace moefold {

uint64_t fnv1a_64(std::string_view text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint64_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = kMul0 * ctr[0];
    const uint64_t p1 = kMul1 * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

double standard_normal_at(uint64_t seed, uint64_t name_hash, uint64_t global_index) {
  const auto x =
      philox4x32_10({static_cast<uint32_t>(global_index), static_cast<uint32_t>(global_index >> 32),
                     static_cast<uint32_t>(name_hash), static_cast<uint32_t>(name_hash >> 32)},
                    {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  constexpr double kInv32 = 1.0 / 4294967296.0;
  const double u1 = (x[0] + 0.5) * kInv32;
  const double u2 = (x[1] + 0.5) * kInv32;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

void init_tensor(const TensorLayout& layout, InitKind kind, float std, uint64_t seed,
                 float* local) {
  const int64_t n = layout.local_numel();
  if (kind != InitKind::kNormal) {
    const float v = kind == InitKind::kOnes ? 1.0f : 0.0f;
    for (int64_t i = 0; i < n; ++i) local[i] = v;
    return;
  }
  const int rank = static_cast<int>(layout.global_shape.size());
  MOEFOLD_CHECK(rank >= 1 && layout.local_shape.size() == layout.global_shape.size() &&
                    layout.local_offset.size() == layout.global_shape.size(),
                layout.name);
  const uint64_t h = fnv1a_64(layout.name);
  // Walk the local slice row by row: the last axis is contiguous in both local and global.
  const int64_t row = layout.local_shape[rank - 1];
  std::vector<int64_t> idx(rank, 0);  // local multi-index of the row start (last axis = 0)
  for (int64_t start = 0; start < n; start += row) {
    int64_t global = 0;
    for (int a = 0; a < rank; ++a)
      global = global * layout.global_shape[a] + idx[a] + layout.local_offset[a];
    for (int64_t j = 0; j < row; ++j) {
      local[start + j] = static_cast<float>(std * standard_normal_at(seed, h, global + j));
    }
    for (int a = rank - 2; a >= 0; --a) {
      if (++idx[a] < layout.local_shape[a]) break;
      idx[a] = 0;
    }
  }
}

}  // namespace moefold
