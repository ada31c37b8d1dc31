#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/routing.h"

#include <algorithm>

#include "tensor/cpu/router.h"

namespace moefold::cpu {

void route_forward(const float* z_nE, const float* bias_E, float* probs_nE, int32_t* idx_nk,
                   float* gates_nk, float* lse_n, int64_t n, const RouterRowConfig& config) {
  const int64_t E = config.experts, k = config.topk;
  // Sigmoid scores through the vectorised sigmoid_forward: the same sigmoid_value, computed as
  // the router always has on this machine (with FMA where the ISA clone has it).
  if (!config.softmax) sigmoid_forward(z_nE, probs_nE, n * E);
  for (int64_t t = 0; t < n; ++t) {
    const float* z = z_nE + t * E;
    float* probs = probs_nE + t * E;
    if (config.softmax) router_row_scores(config, z, probs);
    router_row_choose(config, z, bias_E, probs, idx_nk + t * k, gates_nk + t * k,
                      lse_n != nullptr ? lse_n + t : nullptr);
  }
}

void route_load_sums(const float* probs_nE, const float* lse_n, const int32_t* row_group_n,
                     double* sums, int64_t n, int64_t groups, const RouterRowConfig& config) {
  const int64_t E = config.experts;
  std::fill(sums, sums + groups * E + 1, 0.0);
  for (int64_t t = 0; t < n && groups > 0; ++t) {
    const float* p = probs_nE + t * E;
    const float row_sum = config.softmax ? 0.0f : router_score_sum(p, config.experts);
    double* sum = sums + (row_group_n != nullptr ? row_group_n[t] : 0) * E;
    for (int64_t e = 0; e < E; ++e) sum[e] += router_balance_prob(config.softmax, p[e], row_sum);
  }
  for (int64_t t = 0; t < n && lse_n != nullptr; ++t) {
    sums[groups * E] += static_cast<double>(lse_n[t]) * lse_n[t];
  }
}

void route_backward(const float* dgates_nk, const uint8_t* keep_nk, const float* gates_nk,
                    const float* probs_nE, const float* z_nE, const int32_t* idx_nk,
                    const float* lse_n, const int64_t* counts_GE, const int32_t* row_group_n,
                    float* dz_nE, int64_t n, const RouterBackwardConfig& config) {
  const int64_t E = config.row.experts, k = config.row.topk;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t group = row_group_n != nullptr ? row_group_n[t] : 0;
    router_row_backward(config, dgates_nk + t * k, keep_nk != nullptr ? keep_nk + t * k : nullptr,
                        gates_nk + t * k, probs_nE + t * E, z_nE + t * E, idx_nk + t * k,
                        config.z_loss ? lse_n[t] : 0.0f,
                        config.balance ? counts_GE + group * E : nullptr, dz_nE + t * E);
  }
}

}  // namespace moefold::cpu
