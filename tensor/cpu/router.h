// Router primitives: row softmax, sigmoid, top-k, log-sum-exp.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// p (N,E) = softmax(z) over each row; p may alias z. Entries of -inf give 0.
void softmax_rows_forward(const float* z_NE, float* p_NE, int64_t N, int64_t E);
// dz (N,E) = p ⊙ (dp − Σ_e dp·p), overwritten. dz may alias dp.
void softmax_rows_backward(const float* dp_NE, const float* p_NE, float* dz_NE, int64_t N,
                           int64_t E);

// s = σ(z), element-wise over n; s may alias z.
void sigmoid_forward(const float* z, float* s, int64_t n);
// dz = ds · s · (1 − s), overwritten; dz may alias ds.
void sigmoid_backward(const float* ds, const float* s, float* dz, int64_t n);

// For each row: the k largest scores in descending order; equal scores order by LOWER index
// first. -inf scores are allowed (they are picked last). idx (N,k) int32; val (N,k) may be null.
void topk_rows(const float* scores_NE, int64_t N, int64_t E, int64_t k, int32_t* idx_NK,
               float* val_NK);

// out (N) = log Σ_e exp(z[n,e]) (stable).
void logsumexp_rows(const float* z_NE, float* out_N, int64_t N, int64_t E);

}  // namespace moefold::cpu
