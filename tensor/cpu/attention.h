// Causal attention with GQA, computed blockwise over keys with an online softmax
// (flash-attention style). Also returns the log-sum-exp of the scores so that partial results
// over disjoint key sets (ring attention) can be merged exactly.
//
// Layouts (row-major): q, o, dq, do (B, Sq, nh, d); k, v, dk, dv (B, Skv, nkv, d); lse (B, nh, Sq).
// Query head i uses key/value head i / (nh/nkv). Scale 1/sqrt(d). Key j is visible to query i
// iff k_pos[j] <= q_pos[i] (positions are the same for every sequence of the batch; one process:
// 0..S-1). A query with no visible key gets o = 0 and lse = -inf.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// o and lse are overwritten.
void attention_forward(const float* q, const float* k, const float* v, float* o, float* lse,
                       const int32_t* q_pos_Sq, const int32_t* k_pos_Skv, int64_t B, int64_t Sq,
                       int64_t Skv, int64_t nh, int64_t nkv, int64_t d);

// o and lse are the FINAL (merged over every key block) forward outputs. dq, dk, dv ACCUMULATE,
// so ring attention can sum the contributions of each key block.
void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, float* dq, float* dk, float* dv,
                        const int32_t* q_pos_Sq, const int32_t* k_pos_Skv, int64_t B, int64_t Sq,
                        int64_t Skv, int64_t nh, int64_t nkv, int64_t d);

// Combines two partial results over disjoint key sets, in place into (o_a, lse_a):
// lse = logaddexp(lse_a, lse_b), o = o_a·exp(lse_a − lse) + o_b·exp(lse_b − lse).
// o (B, Sq, nh, d), lse (B, nh, Sq). Rows masked in both stay o = 0, lse = -inf.
void attention_merge(float* o_a, float* lse_a, const float* o_b, const float* lse_b, int64_t B,
                     int64_t Sq, int64_t nh, int64_t d);

}  // namespace moefold::cpu
