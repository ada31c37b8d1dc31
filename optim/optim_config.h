// The `optimizer` section of a recipe (MODEL.md "Optimizer and schedule").
#pragma once

#include <string>

namespace moefold {

enum class LrDecayStyle { kCosine, kLinear, kConstant };

struct OptimizerConfig {
  std::string optimizer = "adam";  // AdamW with decoupled weight decay; the only one for now
  float lr = 3e-4f;
  float min_lr = 3e-5f;
  int lr_warmup_iters = 0;
  int lr_decay_iters = 0;          // 0 = train_iters
  LrDecayStyle lr_decay_style = LrDecayStyle::kCosine;
  float weight_decay = 0.1f;
  float adam_beta1 = 0.9f;
  float adam_beta2 = 0.95f;
  float adam_eps = 1e-8f;
  float clip_grad = 1.0f;          // 0 = no clipping
};

}  // namespace moefold
