#include "optim/adamw.h"

#include <cmath>

#include "tensor/check.h"

namespace moefold {

AdamW::AdamW(const OptimizerConfig& config, std::vector<OptimTensor> tensors)
    : config_(config), tensors_(std::move(tensors)) {
  for (const OptimTensor& t : tensors_) {
    MOEFOLD_CHECK(t.param.shape() == t.grad.shape(), t.name << ": param " << t.param.shape_string()
                                                             << " vs grad " << t.grad.shape_string());
    exp_avg_.push_back(Tensor::zeros(t.param.shape()));
    exp_avg_sq_.push_back(Tensor::zeros(t.param.shape()));
  }
}

void AdamW::step(double lr) {
  ++steps_;
  const double beta1 = config_.adam_beta1, beta2 = config_.adam_beta2;
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(steps_));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float step_size = static_cast<float>(lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float eps = config_.adam_eps;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& t = tensors_[i];
    const float decay = t.weight_decay ? static_cast<float>(lr * config_.weight_decay) : 0.0f;
    float* theta = t.param.data();
    const float* g = t.grad.data();
    float* m = exp_avg_[i].data();
    float* v = exp_avg_sq_[i].data();
    const int64_t n = t.param.numel();
    for (int64_t j = 0; j < n; ++j) {
      m[j] = b1 * m[j] + (1.0f - b1) * g[j];
      v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
      const float denom = std::sqrt(v[j]) * inv_sqrt_bias2 + eps;
      theta[j] -= step_size * m[j] / denom + decay * theta[j];
    }
  }
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < exp_avg_.size(); ++i) {
    bytes += static_cast<int64_t>(exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes());
  }
  return bytes;
}

}  // namespace moefold
