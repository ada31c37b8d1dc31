// Token embedding lookup and its gradient (scatter-add), over a table that holds the vocabulary
// rows [first_row, first_row + rows) of V (the whole table: first_row 0, rows V; a TP shard
// otherwise).
#pragma once

#include <cstdint>

namespace moefold::cpu {

// out[n] (H) = table[tokens[n] − first_row] when that row is in the table, else 0. Token ids
// are validated by data/; an id outside [0,V) is a bug and fails MOEFOLD_CHECK.
void embedding_forward(const int32_t* tokens_N, const float* table_rH, float* out_NH, int64_t N,
                       int64_t V, int64_t first_row, int64_t rows, int64_t H);
// dtable[tokens[n] − first_row] += dout[n] for the tokens in the table. Accumulates (repeated
// tokens add up).
void embedding_backward(const float* dout_NH, const int32_t* tokens_N, float* dtable_rH,
                        int64_t N, int64_t V, int64_t first_row, int64_t rows, int64_t H);

}  // namespace moefold::cpu
