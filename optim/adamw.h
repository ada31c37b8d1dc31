// AdamW with decoupled weight decay, exactly as MODEL.md "Optimizer and schedule" defines it.
// The optimizer sees flat (parameter, gradient) pairs, never the model's structure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/optim_config.h"
#include "tensor/tensor.h"

namespace moefold {

struct OptimTensor {
  std::string name;          // MODEL.md checkpoint name, for checkpoints and messages
  Tensor param;              // updated in place
  Tensor grad;               // same shape as param
  bool weight_decay = true;  // matrices yes, norm weights no
};

class AdamW {
 public:
  AdamW(const OptimizerConfig& config, std::vector<OptimTensor> tensors);

  // One update with learning rate `lr`; the step count t becomes steps() + 1.
  void step(double lr);

  int64_t steps() const { return steps_; }
  void set_steps(int64_t steps) { steps_ = steps; }
  const std::vector<OptimTensor>& tensors() const { return tensors_; }
  const Tensor& exp_avg(size_t i) const { return exp_avg_[i]; }       // m, shape of param i
  const Tensor& exp_avg_sq(size_t i) const { return exp_avg_sq_[i]; } // v, shape of param i
  int64_t state_bytes() const;  // bytes of m and v held by this rank

 private:
  OptimizerConfig config_;
  std::vector<OptimTensor> tensors_;
  std::vector<Tensor> exp_avg_;
  std::vector<Tensor> exp_avg_sq_;
  int64_t steps_ = 0;
};

}  // namespace moefold
