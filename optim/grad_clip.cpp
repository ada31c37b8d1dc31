#include "optim/grad_clip.h"

#include <cmath>
#include <span>

#include "tensor/ops.h"

namespace moefold {

double global_grad_norm(const std::vector<Tensor>& counted, Communicator& world) {
  double sum = ops::square_sum_total(counted);
  world.all_reduce(std::span<double>(&sum, 1));
  return std::sqrt(sum);
}

double grad_square_sum(const std::vector<OptimTensor>& tensors) {
  std::vector<Tensor> grads;
  for (const OptimTensor& t : tensors) grads.push_back(t.grad);
  return ops::square_sum_total(grads);
}

double clip_gradients(const std::vector<OptimTensor>& tensors, double norm, double clip_grad) {
  if (clip_grad <= 0.0 || norm <= clip_grad) return 1.0;
  const double scale = clip_grad / (norm + 1e-6);
  const float s = static_cast<float>(scale);
  for (const OptimTensor& t : tensors) ops::scale(t.grad, s);
  return scale;
}

}  // namespace moefold
