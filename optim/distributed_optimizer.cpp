#include "optim/distributed_optimizer.h"

#include <cstring>

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

std::vector<OptimTensor> segment_tensors(const std::vector<ShardSegment>& segments) {
  std::vector<OptimTensor> out;
  for (const ShardSegment& s : segments) {
    MOEFOLD_CHECK(s.param.numel() == s.grad.numel(), s.name << ": segment param "
                                                            << s.param.shape_string() << " vs grad "
                                                            << s.grad.shape_string());
    out.push_back({s.name, s.param, s.grad, s.weight_decay});
  }
  return out;
}

void copy_elements(const float* from, float* to, int64_t n) {
  ops::copy_memory(to, from, static_cast<size_t>(n) * sizeof(float));
}

}  // namespace

DistributedOptimizer::DistributedOptimizer(const OptimizerConfig& config,
                                           std::vector<ShardSegment> segments)
    : segments_(std::move(segments)), adam_(config, segment_tensors(segments_)) {}

void DistributedOptimizer::step(double lr) { adam_.step(lr); }

void DistributedOptimizer::copy_state_to(const std::vector<Tensor>& exp_avg,
                                         const std::vector<Tensor>& exp_avg_sq) const {
  for (size_t i = 0; i < segments_.size(); ++i) {
    const ShardSegment& s = segments_[i];
    const int64_t n = s.param.numel();
    for (const Tensor* full : {&exp_avg[s.param_index], &exp_avg_sq[s.param_index]}) {
      MOEFOLD_CHECK(s.param_offset + n <= full->numel(), s.name << ": state tensor too small");
    }
    copy_elements(adam_.exp_avg(i).data(), exp_avg[s.param_index].data() + s.param_offset, n);
    copy_elements(adam_.exp_avg_sq(i).data(), exp_avg_sq[s.param_index].data() + s.param_offset, n);
  }
}

void DistributedOptimizer::load_state_from(const std::vector<Tensor>& exp_avg,
                                           const std::vector<Tensor>& exp_avg_sq) {
  for (size_t i = 0; i < segments_.size(); ++i) {
    const ShardSegment& s = segments_[i];
    const int64_t n = s.param.numel();
    for (const Tensor* full : {&exp_avg[s.param_index], &exp_avg_sq[s.param_index]}) {
      MOEFOLD_CHECK(s.param_offset + n <= full->numel(), s.name << ": state tensor too small");
    }
    copy_elements(exp_avg[s.param_index].data() + s.param_offset, adam_.exp_avg(i).data(), n);
    copy_elements(exp_avg_sq[s.param_index].data() + s.param_offset, adam_.exp_avg_sq(i).data(), n);
  }
}

}  // namespace moefold
