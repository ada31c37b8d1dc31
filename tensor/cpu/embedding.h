// Token embedding lookup and its gradient (scatter-add).
#pragma once

#include <cstdint>

namespace moefold::cpu {

// out[n] (H) = table[tokens[n]]. Token ids are validated by data/; an id outside [0,V) is a
// bug and fails MOEFOLD_CHECK.
void embedding_forward(const int32_t* tokens_N, const float* table_VH, float* out_NH, int64_t N,
                       int64_t V, int64_t H);
// dtable[tokens[n]] += dout[n]. Accumulates (repeated tokens add up).
void embedding_backward(const float* dout_NH, const int32_t* tokens_N, float* dtable_VH,
                        int64_t N, int64_t V, int64_t H);

}  // namespace moefold::cpu
