// The distributed optimizer (ZeRO-1): AdamW over the parameter elements this rank owns, i.e. its
// 1/DP slice of every gradient bucket (parallel/grad_buckets.h). Adam's moments exist only for
// those elements; the parameters are float32 already, so the owned parameter elements are the
// master weights, updated in place and then all-gathered by the bucket set.
//
// The update of each element is exactly AdamW's (same float operations), so a step over the
// owned slices of every rank equals one AdamW step over the whole parameters, bit for bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/optim_config.h"
#include "tensor/tensor.h"

namespace moefold {

// A contiguous run of one parameter's elements owned by this rank.
struct ShardSegment {
  int param_index = 0;       // index of the parameter in the caller's list
  int64_t param_offset = 0;  // first element of the (flattened) parameter covered
  Tensor param;              // (n) view of the owned parameter elements, updated in place
  Tensor grad;               // (n) view of their reduced gradients
  bool weight_decay = true;  // the parameter's flag, for every element of the segment
  std::string name;          // the parameter's name, for messages
};

class DistributedOptimizer {
 public:
  DistributedOptimizer(const OptimizerConfig& config, std::vector<ShardSegment> segments);

  void step(double lr);  // AdamW on the owned elements; the step count becomes steps() + 1
  int64_t steps() const { return adam_.steps(); }
  void set_steps(int64_t steps) { adam_.set_steps(steps); }
  int64_t state_bytes() const { return adam_.state_bytes(); }  // m and v of the owned elements
  const std::vector<ShardSegment>& segments() const { return segments_; }
  // The moments of segment i (n each), for checkpoints that save the shards as they are.
  const Tensor& exp_avg(size_t segment) const { return adam_.exp_avg(segment); }
  const Tensor& exp_avg_sq(size_t segment) const { return adam_.exp_avg_sq(segment); }

  // Layout-independent state: `exp_avg`/`exp_avg_sq` hold one tensor per parameter of the
  // caller's list (any shape of the parameter's element count). copy_state_to writes the owned
  // elements and leaves the others alone; load_state_from reads the owned elements.
  void copy_state_to(const std::vector<Tensor>& exp_avg,
                     const std::vector<Tensor>& exp_avg_sq) const;
  void load_state_from(const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq);

 private:
  std::vector<ShardSegment> segments_;
  AdamW adam_;  // one OptimTensor per segment
};

}  // namespace moefold
