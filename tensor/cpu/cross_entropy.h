// Cross-entropy over the vocabulary. The fused form works on row chunks so the only (·,V)
// buffer is one chunk of logits, which is turned into its own gradient in place.
#pragma once

#include <cstdint>

namespace moefold::cpu {

// For each chunk of `chunk_rows` rows of h: logits (chunk,V) = h wᵀ; CE = −log softmax[label];
// *loss_sum_out = Σ_n CE[n]·mask[n] (set, not added). When grad_scale != 0 and dh, dw are
// non-null: dlogits = (softmax − onehot(label))·mask·grad_scale, dh (N,H) = dlogits w
// (overwritten) and dw (V,H) += dlogitsᵀ h (accumulates); either may be null to skip it.
// grad_scale == 0 or dh == dw == null: forward only (evaluation), dh and dw untouched.
// mask (N) may be null (all ones); rows with mask 0 add no loss and no gradient and their label
// is not read. Labels of other rows must be in [0,V) (checked).
// The chunk buffer is a Tensor, so it shows in MemoryStats.
void cross_entropy_forward_backward(const float* h_NH, const float* w_VH, const int32_t* labels_N,
                                    const float* mask_N, float grad_scale, double* loss_sum_out,
                                    float* dh_NH, float* dw_VH, int64_t N, int64_t H, int64_t V,
                                    int64_t chunk_rows);

// Plain per-row form over materialised logits (building block for vocabulary parallelism).
// loss[n] = CE[n]·mask[n] (mask null = ones; masked rows give 0 and their label is not read).
void cross_entropy_rows(const float* logits_NV, const int32_t* labels_N, const float* mask_N,
                        float* loss_N, int64_t N, int64_t V);
// dlogits (N,V) = (softmax(logits) − onehot(label))·mask·grad_scale, overwritten;
// dlogits may equal logits (in place).
void cross_entropy_rows_backward(const float* logits_NV, const int32_t* labels_N,
                                 const float* mask_N, float grad_scale, float* dlogits_NV,
                                 int64_t N, int64_t V);

}  // namespace moefold::cpu
