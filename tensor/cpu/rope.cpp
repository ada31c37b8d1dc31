#include "tensor/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/check.h"
#include "tensor/row_math.h"

namespace moefold::cpu {
namespace {

// cos θ_i(p) and sign·sin θ_i(p) for each listed position p and i < d/2, computed in double,
// as (count, d/2) tables.
void angle_tables(const std::vector<int64_t>& positions, int64_t d, float base, float sign,
                  std::vector<float>& cos_table, std::vector<float>& sin_table) {
  const int64_t half = d / 2;
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = rope_inv_freq(i, d, base);
  }
  cos_table.resize(positions.size() * half);
  sin_table.resize(positions.size() * half);
  for (size_t row = 0; row < positions.size(); ++row) {
    for (int64_t i = 0; i < half; ++i) {
      const double theta = static_cast<double>(positions[row]) * inv_freq[i];
      cos_table[row * half + i] = static_cast<float>(std::cos(theta));
      sin_table[row * half + i] = sign * static_cast<float>(std::sin(theta));
    }
  }
}

// Rotates each (x1[i], x2[i]) pair of every head by sign·θ_i(p).
void rotate(const float* x, float* y, const int32_t* positions_N, int64_t N, int64_t heads,
            int64_t d, float base, float sign) {
  MOEFOLD_CHECK(d % 2 == 0, "RoPE head dim must be even, got " << d);
  if (N == 0) return;
  // Positions repeat across the sequences of a batch: tabulate the range [lo, hi] once unless
  // it is much wider than the number of tokens, then tabulate each token's own position.
  const auto [lo, hi] = std::minmax_element(positions_N, positions_N + N);
  const int64_t span = static_cast<int64_t>(*hi) - *lo + 1;
  const bool by_range = span <= 2 * N;
  std::vector<int64_t> tabulated(by_range ? span : N);
  for (size_t row = 0; row < tabulated.size(); ++row) {
    tabulated[row] = by_range ? *lo + static_cast<int64_t>(row) : positions_N[row];
  }
  std::vector<float> cos_table, sin_table;
  angle_tables(tabulated, d, base, sign, cos_table, sin_table);

  const int64_t half = d / 2;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = by_range ? positions_N[n] - *lo : n;
    const float* cos_i = &cos_table[row * half];
    const float* sin_i = &sin_table[row * half];
    for (int64_t h = 0; h < heads; ++h) {
      const float* xr = x + (n * heads + h) * d;
      float* yr = y + (n * heads + h) * d;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = xr[i], x2 = xr[i + half];
        rope_rotate(x1, x2, cos_i[i], sin_i[i], &yr[i], &yr[i + half]);
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
