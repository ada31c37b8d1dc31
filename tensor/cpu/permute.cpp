#include "tensor/cpu/permute.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "tensor/check.h"

namespace moefold::cpu {

// Counting sort by expert: stable because assignments are visited in (t, j) order.
int64_t build_expert_permutation(const int32_t* idx_NK, const uint8_t* keep_NK, int64_t N,
                                 int64_t K, int64_t E, int64_t* counts_E, int32_t* perm_R) {
  MOEFOLD_CHECK(N * K <= INT32_MAX, "too many assignments for int32 permutation: " << N * K);
  std::fill(counts_E, counts_E + E, int64_t{0});
  for (int64_t a = 0; a < N * K; ++a) {
    if (keep_NK != nullptr && keep_NK[a] == 0) continue;
    const int32_t e = idx_NK[a];
    MOEFOLD_CHECK(e >= 0 && e < E, "expert id " << e << " outside [0," << E << ")");
    ++counts_E[e];
  }
  std::vector<int64_t> next(E, 0);
  for (int64_t e = 1; e < E; ++e) next[e] = next[e - 1] + counts_E[e - 1];
  const int64_t R = E > 0 ? next[E - 1] + counts_E[E - 1] : 0;
  for (int64_t a = 0; a < N * K; ++a) {
    if (keep_NK != nullptr && keep_NK[a] == 0) continue;
    perm_R[next[idx_NK[a]]++] = static_cast<int32_t>(a);
  }
  return R;
}

void permute_tokens(const float* x_NH, const int32_t* perm_R, float* out_RH, int64_t R, int64_t K,
                    int64_t H) {
  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = perm_R[r] / K;
    std::memcpy(out_RH + r * H, x_NH + t * H, static_cast<size_t>(H) * sizeof(float));
  }
}

void permute_tokens_backward(const float* dout_RH, const int32_t* perm_R, float* dx_NH, int64_t R,
                             int64_t K, int64_t H) {
  for (int64_t r = 0; r < R; ++r) {
    float* dx = dx_NH + (perm_R[r] / K) * H;
    const float* dout = dout_RH + r * H;
    for (int64_t h = 0; h < H; ++h) dx[h] += dout[h];
  }
}

void combine_tokens(const float* y_RH, const int32_t* perm_R, const float* weights_NK,
                    float* out_NH, int64_t R, int64_t K, int64_t H) {
  for (int64_t r = 0; r < R; ++r) {
    const int32_t a = perm_R[r];
    const float w = weights_NK[a];
    float* out = out_NH + (a / K) * H;
    const float* y = y_RH + r * H;
    for (int64_t h = 0; h < H; ++h) out[h] += w * y[h];
  }
}

void combine_tokens_backward(const float* dout_NH, const float* y_RH, const int32_t* perm_R,
                             const float* weights_NK, float* dy_RH, float* dweights_NK, int64_t R,
                             int64_t K, int64_t H) {
  for (int64_t r = 0; r < R; ++r) {
    const int32_t a = perm_R[r];
    const float w = weights_NK[a];
    const float* dout = dout_NH + (a / K) * H;
    const float* y = y_RH + r * H;
    float* dy = dy_RH + r * H;
    float dot = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
      dy[h] = w * dout[h];
      dot += dout[h] * y[h];
    }
    dweights_NK[a] += dot;
  }
}

}  // namespace moefold::cpu
