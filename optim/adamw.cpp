#include "optim/adamw.h"

#include <cmath>
#include <vector>

#include "tensor/check.h"
#include "tensor/ops.h"

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
  const AdamWScalars scalars{static_cast<float>(beta1),
                             static_cast<float>(beta2),
                             static_cast<float>(lr / bias1),
                             static_cast<float>(1.0 / std::sqrt(bias2)),
                             config_.adam_eps,
                             0.0f};  // each tensor's decay comes with it
  const float decay = static_cast<float>(lr * config_.weight_decay);
  std::vector<ops::AdamWOperands> operands;
  operands.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimTensor& t = tensors_[i];
    operands.push_back(
        {t.param, t.grad, exp_avg_[i], exp_avg_sq_[i], t.weight_decay ? decay : 0.0f});
  }
  ops::adamw_step(operands, scalars);
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < exp_avg_.size(); ++i) {
    bytes += static_cast<int64_t>(exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes());
  }
  return bytes;
}

}  // namespace moefold
