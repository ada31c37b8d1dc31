#include "optim/grad_clip.h"

namespace moefold {

double grad_square_sum(const std::vector<OptimTensor>& tensors) {
  double total = 0.0;
  for (const OptimTensor& t : tensors) {
    const float* g = t.grad.data();
    const int64_t n = t.grad.numel();
    double partial = 0.0;
    for (int64_t j = 0; j < n; ++j) partial += double(g[j]) * g[j];
    total += partial;
  }
  return total;
}

double clip_gradients(const std::vector<OptimTensor>& tensors, double norm, double clip_grad) {
  if (clip_grad <= 0.0 || norm <= clip_grad) return 1.0;
  const double scale = clip_grad / (norm + 1e-6);
  const float s = static_cast<float>(scale);
  for (const OptimTensor& t : tensors) {
    float* g = t.grad.data();
    const int64_t n = t.grad.numel();
    for (int64_t j = 0; j < n; ++j) g[j] *= s;
  }
  return scale;
}

}  // namespace moefold
