// Data parallelism bound to the model (DESIGN.md "The step"): the data-parallel optimizer
// (optim/data_parallel_optimizer.h: gradient buckets, ZeRO ownership, norm, clipping, AdamW) over
// the model's parameters, tied to the model's hooks. The per-step calls, in order:
//
//   start_step()                    zero the gradients
//   set_last_micro_batch(true)      before the last micro-batch's backward (overlap_grad_reduce:
//                                   buckets are launched from the model's grad-ready hook then)
//   finish_grad_reduction()         the tied embedding's pipeline sum, then every bucket's
//                                   reduction launched and waited for
//   grad_norm(), clip(norm, max)    each element counted once over the whole world
//   step(lr)                        AdamW (on the owned slices), then the parameter all-gathers;
//                                   with overlap_param_gather they finish in the next forward,
//                                   each bucket just before its first use (forward-pre hook)
#pragma once

#include <unordered_map>

#include "model/model.h"
#include "optim/data_parallel_optimizer.h"
#include "optim/optim_config.h"
#include "parallel/context.h"

namespace moefold {

class DataParallelState : public DataParallelOptimizer {
 public:
  // `model` must outlive this object; its parameters must be initialised (the values are copied
  // into the flat buffer with the distributed optimizer). Installs the model's hooks.
  DataParallelState(Model& model, const OptimizerConfig& optimizer, const ParallelContext& ctx);
  ~DataParallelState();  // removes the hooks; the buckets then wait for work in flight

  void start_step();
  void set_last_micro_batch(bool last) { last_micro_batch_ = last; }
  void finish_grad_reduction();
  // Buckets whose reduction the last step launched from backward (overlap_grad_reduce).
  int buckets_launched_in_backward() const { return launched_in_backward_; }

 private:
  Model& model_;
  const ParallelContext ctx_;
  bool overlap_grad_reduce_;
  std::unordered_map<const Parameter*, int> index_;  // each parameter's index in model order
  bool last_micro_batch_ = true;
  int launched_in_backward_ = 0;
};

}  // namespace moefold
