#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace moefold {

double learning_rate(const OptimizerConfig& config, int iteration, int train_iters) {
  const double lr = config.lr, min_lr = config.min_lr;
  const int warmup = config.lr_warmup_iters;
  if (iteration < warmup) return lr * (iteration + 1) / warmup;
  const int decay_iters = config.lr_decay_iters > 0 ? config.lr_decay_iters : train_iters;
  const double p =
      std::clamp(double(iteration - warmup) / std::max(1, decay_iters - warmup), 0.0, 1.0);
  switch (config.lr_decay_style) {
    case LrDecayStyle::kCosine:
      return min_lr + (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * p)) / 2.0;
    case LrDecayStyle::kLinear:
      return lr - (lr - min_lr) * p;
    case LrDecayStyle::kConstant:
      return lr;
  }
  return lr;
}

}  // namespace moefold
