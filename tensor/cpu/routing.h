// Routing on the CPU (Backend::route_*): loops over rows of tensor/router_math.h's row
// functions, which the CUDA kernels run one row per thread.
#pragma once

#include <cstdint>

#include "tensor/router_math.h"

namespace moefold::cpu {

void route_forward(const float* z_nE, const float* bias_E, float* probs_nE, int32_t* idx_nk,
                   float* gates_nk, float* lse_n, int64_t n, const RouterRowConfig& config);
void route_load_sums(const float* probs_nE, const float* lse_n, const int32_t* row_group_n,
                     double* sums, int64_t n, int64_t groups, const RouterRowConfig& config);
void route_backward(const float* dgates_nk, const uint8_t* keep_nk, const float* gates_nk,
                    const float* probs_nE, const float* z_nE, const int32_t* idx_nk,
                    const float* lse_n, const int64_t* counts_GE, const int32_t* row_group_n,
                    float* dz_nE, int64_t n, const RouterBackwardConfig& config);

}  // namespace moefold::cpu
