// Token permutation by expert for the MoE layer: the N·K (token, choice) assignments are sorted
// by expert so that each expert's rows are contiguous (grouped GEMM), then gathered back and
// mixed with the gate weights. An assignment a = t·K + j is token t's j-th choice.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// Sorts the kept assignments by expert, stably (within an expert, in token order, then j).
// idx (N,K) expert ids in [0,E); keep (N,K) may be null (all kept), 0 = dropped.
// counts (E) int64 out: kept rows per expert. perm (capacity N·K) int32 out: perm[r] = source
// assignment t·K+j of permuted row r; rows of expert e are [Σ_{e'<e} counts, +counts[e]).
// Returns R = number of kept assignments.
int64_t build_expert_permutation(const int32_t* idx_NK, const uint8_t* keep_NK, int64_t N,
                                 int64_t K, int64_t E, int64_t* counts_E, int32_t* perm_R);

// out[r] (H) = x[perm[r] / K]. out (R,H) overwritten.
void permute_tokens(const float* x_NH, const int32_t* perm_R, float* out_RH, int64_t R, int64_t K,
                    int64_t H);
// Adjoint of permute_tokens: dx[perm[r] / K] += dout[r]. Accumulates into dx (N,H).
void permute_tokens_backward(const float* dout_RH, const int32_t* perm_R, float* dx_NH, int64_t R,
                             int64_t K, int64_t H);

// out[t] += w[t,j] · y[r] for every permuted row r with perm[r] = t·K+j. Accumulates into
// out (N,H) (e.g. onto the shared expert's output). weights (N,K).
void combine_tokens(const float* y_RH, const int32_t* perm_R, const float* weights_NK,
                    float* out_NH, int64_t R, int64_t K, int64_t H);
// dy[r] = w[t,j] · dout[t] (overwritten, (R,H)); dweights[t,j] += dout[t]·y[r] (accumulates;
// entries of dropped assignments are left untouched).
void combine_tokens_backward(const float* dout_NH, const float* y_RH, const int32_t* perm_R,
                             const float* weights_NK, float* dy_RH, float* dweights_NK, int64_t R,
                             int64_t K, int64_t H);

}  // namespace moefold::cpu
