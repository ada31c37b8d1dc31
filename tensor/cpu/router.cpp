#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "tensor/check.h"
#include "tensor/cpu/vec_math.h"
#include "tensor/row_math.h"

namespace moefold::cpu {

void softmax_rows_forward(const float* z_NE, float* p_NE, int64_t N, int64_t E) {
  for (int64_t n = 0; n < N; ++n) {
    const float* z = z_NE + n * E;
    float* p = p_NE + n * E;
    const float max = *std::max_element(z, z + E);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) {
      p[e] = std::exp(z[e] - max);
      sum += p[e];
    }
    const float inv = 1.0f / sum;
    for (int64_t e = 0; e < E; ++e) p[e] *= inv;
  }
}

void softmax_rows_backward(const float* dp_NE, const float* p_NE, float* dz_NE, int64_t N,
                           int64_t E) {
  for (int64_t n = 0; n < N; ++n) {
    const float* dp = dp_NE + n * E;
    const float* p = p_NE + n * E;
    float* dz = dz_NE + n * E;
    float dot = 0.0f;
    for (int64_t e = 0; e < E; ++e) dot += dp[e] * p[e];
    for (int64_t e = 0; e < E; ++e) dz[e] = softmax_gradient(dp[e], p[e], dot);
  }
}

MOEFOLD_ISA_CLONES
void sigmoid_forward(const float* z, float* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) s[i] = sigmoid_value(z[i]);
}

void sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dz[i] = sigmoid_gradient(ds[i], s[i]);
}

void topk_rows(const float* scores_NE, int64_t N, int64_t E, int64_t k, int32_t* idx_NK,
               float* val_NK) {
  MOEFOLD_CHECK(k >= 1 && k <= E, "top-k " << k << " of " << E << " scores");
  std::vector<int32_t> order(E);
  for (int64_t n = 0; n < N; ++n) {
    const float* s = scores_NE + n * E;
    std::iota(order.begin(), order.end(), 0);
    // Strict order on (score descending, index ascending) makes ties go to the lower index.
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [s](int32_t a, int32_t b) {
      return s[a] > s[b] || (s[a] == s[b] && a < b);
    });
    for (int64_t j = 0; j < k; ++j) {
      idx_NK[n * k + j] = order[j];
      if (val_NK != nullptr) val_NK[n * k + j] = s[order[j]];
    }
  }
}

void logsumexp_rows(const float* z_NE, float* out_N, int64_t N, int64_t E) {
  for (int64_t n = 0; n < N; ++n) {
    const float* z = z_NE + n * E;
    const float max = *std::max_element(z, z + E);
    if (max == -std::numeric_limits<float>::infinity()) {
      out_N[n] = max;
      continue;
    }
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(z[e] - max);
    out_N[n] = max + std::log(sum);
  }
}

}  // namespace moefold::cpu
