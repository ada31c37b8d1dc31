// Learning rate of iteration i (0-based), MODEL.md: linear warm-up, then cosine, linear or constant
// decay from lr to min_lr over lr_decay_iters.
#pragma once

#include "optim/optim_config.h"

namespace moefold {

// `train_iters` stands in for lr_decay_iters when the recipe leaves it 0.
double learning_rate(const OptimizerConfig& config, int iteration, int train_iters);

}  // namespace moefold
