#include "tensor/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "tensor/check.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/vec_math.h"
#include "tensor/tensor.h"

namespace moefold::cpu {
namespace {

float row_mask(const float* mask_N, int64_t n) { return mask_N == nullptr ? 1.0f : mask_N[n]; }

int32_t checked_label(const int32_t* labels_N, int64_t n, int64_t V) {
  const int32_t label = labels_N[n];
  MOEFOLD_CHECK(label >= 0 && label < V, "label " << label << " at row " << n
                                                  << " outside vocabulary of " << V);
  return label;
}

// CE of one row of logits, log Σ exp(x) − x[label]. When `grad` is non-null it receives
// (softmax − onehot)·factor (grad may equal logits).
float row_cross_entropy(const float* logits, int32_t label, int64_t V, float* grad,
                        float factor) {
  const float max = max_value(logits, V);
  const float label_logit = logits[label];
  if (grad == nullptr) {
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += exp_approx(logits[v] - max);
    return static_cast<float>(max + std::log(sum) - label_logit);
  }
  const float sum = exp_shifted_sum(logits, max, grad, V);
  scale_in_place(grad, factor / sum, V);
  grad[label] -= factor;
  return max + std::log(sum) - label_logit;
}

}  // namespace

void cross_entropy_forward_backward(const float* h_NH, const float* w_VH, const int32_t* labels_N,
                                    const float* mask_N, float grad_scale, double* loss_sum_out,
                                    float* dh_NH, float* dw_VH, int64_t N, int64_t H, int64_t V,
                                    int64_t chunk_rows) {
  MOEFOLD_CHECK(chunk_rows > 0, "chunk_rows must be positive");
  const bool backward = grad_scale != 0.0f && (dh_NH != nullptr || dw_VH != nullptr);
  const int64_t chunk = std::min(chunk_rows, std::max<int64_t>(N, 1));
  Tensor logits_buffer = Tensor::empty({chunk, V});
  float* logits = logits_buffer.data();
  double loss_sum = 0.0;
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    linear_forward(h_NH + r0 * H, w_VH, logits, rows, H, V);
    for (int64_t i = 0; i < rows; ++i) {
      float* row = logits + i * V;
      const float mask = row_mask(mask_N, r0 + i);
      if (mask == 0.0f) {
        if (backward) std::fill(row, row + V, 0.0f);
        continue;
      }
      const int32_t label = checked_label(labels_N, r0 + i, V);
      // The chunk buffer is ours: even forward-only, exponentiate in place (vectorised path).
      const float ce = row_cross_entropy(row, label, V, row, backward ? mask * grad_scale : 0.0f);
      loss_sum += static_cast<double>(ce) * mask;
    }
    if (!backward) continue;
    if (dh_NH != nullptr) linear_backward_dx(logits, w_VH, dh_NH + r0 * H, rows, H, V, false);
    if (dw_VH != nullptr) linear_backward_dw(logits, h_NH + r0 * H, dw_VH, rows, H, V);
  }
  *loss_sum_out = loss_sum;
}

void cross_entropy_rows(const float* logits_NV, const int32_t* labels_N, const float* mask_N,
                        float* loss_N, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    const float mask = row_mask(mask_N, n);
    if (mask == 0.0f) {
      loss_N[n] = 0.0f;
      continue;
    }
    const int32_t label = checked_label(labels_N, n, V);
    loss_N[n] = row_cross_entropy(logits_NV + n * V, label, V, nullptr, 0.0f) * mask;
  }
}

void cross_entropy_rows_backward(const float* logits_NV, const int32_t* labels_N,
                                 const float* mask_N, float grad_scale, float* dlogits_NV,
                                 int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    const float mask = row_mask(mask_N, n);
    float* grad = dlogits_NV + n * V;
    if (mask == 0.0f) {
      std::fill(grad, grad + V, 0.0f);
      continue;
    }
    const int32_t label = checked_label(labels_N, n, V);
    row_cross_entropy(logits_NV + n * V, label, V, grad, mask * grad_scale);
  }
}

}  // namespace moefold::cpu
