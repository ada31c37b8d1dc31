// Data parallelism for the trainer's step (DESIGN.md "The step"): gradient buckets with
// overlapped reduction, the gradient norm and clipping, and the optimizer, plain or distributed.
//
// On construction every parameter's gradient (and, with the distributed optimizer, its value) is
// re-pointed at a view of a flat bucket buffer (parallel/grad_buckets.h): one bucket set for the
// dense parameters, reduced over DP×CP, and one for the routed-expert parameters, reduced over
// expert-DP. The per-step calls, in order:
//
//   start_step()                    zero the gradients
//   set_last_micro_batch(true)      before the last micro-batch's backward (overlap_grad_reduce:
//                                   buckets are launched from the model's grad-ready hook then)
//   finish_grad_reduction()         launch what backward did not, wait for all of it
//   grad_norm(), clip(norm, max)    each element counted once over the whole world
//   step(lr)                        AdamW (on the owned slices), then the parameter all-gathers;
//                                   with overlap_param_gather they finish in the next forward,
//                                   each bucket just before its first use
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "model/model.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "optim/optim_config.h"
#include "parallel/context.h"
#include "parallel/grad_buckets.h"

namespace moefold {

class DataParallelState {
 public:
  // `model` must outlive this object; its parameters must be initialised (the values are copied
  // into the flat buffer with the distributed optimizer). Installs the model's hooks.
  DataParallelState(Model& model, const OptimizerConfig& optimizer, const ParallelContext& ctx);
  ~DataParallelState();  // removes the hooks; waits for work in flight
  DataParallelState(const DataParallelState&) = delete;
  DataParallelState& operator=(const DataParallelState&) = delete;

  void start_step();
  void set_last_micro_batch(bool last) { last_micro_batch_ = last; }
  void finish_grad_reduction();
  // sqrt(Σ g²) over every gradient element of the model, each counted once over all ranks
  // (collective over ctx.world).
  double grad_norm() const;
  // Scales the gradients this rank updates by clip_grad / (norm + 1e-6) when norm > clip_grad.
  void clip(double norm, double clip_grad);
  void step(double lr);
  // Completes every parameter all-gather: call before evaluation or checkpoint saving when the
  // next forward has not run (overlap_param_gather).
  void wait_all_param_gathers();

  int64_t optimizer_steps() const;
  // Bytes of Adam state this rank holds, as measured by the tensor allocator at creation.
  int64_t optimizer_state_bytes() const { return state_bytes_; }
  // Wall seconds the step has waited for gradient reductions / parameter gathers (cumulative).
  double grad_reduce_wait_seconds() const;
  double param_gather_wait_seconds() const;
  int num_buckets() const;  // over both sets
  // Buckets whose reduction the last step launched from backward (overlap_grad_reduce).
  int buckets_launched_in_backward() const { return launched_in_backward_; }

  // Checkpoints stay layout-independent: the Adam moments of every parameter at its local shape,
  // in model.parameters() order. With the distributed optimizer gathering is collective over the
  // DP groups (every rank gets every element); scattering is local (each rank keeps its slices).
  std::vector<Tensor> gather_exp_avg() const;
  std::vector<Tensor> gather_exp_avg_sq() const;
  void scatter_state(const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                     int64_t steps);
  // The same state as an AdamW over the model's parameters, for checkpoint/checkpoint.h
  // (save_checkpoint takes it; load_checkpoint fills one, then restore_optimizer reads it).
  // Waits for the parameter gathers first, so the model's values are complete too.
  std::unique_ptr<AdamW> checkpoint_optimizer();  // collective like gather_exp_avg
  void restore_optimizer(const AdamW& loaded);
  // The Adam state as it is held, for save_checkpoint and load_checkpoint (which fills it in
  // place): whole tensors, or with the distributed optimizer only this rank's owned segments,
  // so no rank ever holds a full-size copy. Waits for the parameter gathers first, so the
  // model's values are complete too. Apply a loaded step count with set_optimizer_steps.
  OptimizerCheckpointState optimizer_checkpoint_state();
  void set_optimizer_steps(int64_t steps);

 private:
  struct Location {
    int set = 0;    // index into sets_
    int entry = 0;  // the parameter's entry in that set's layout
  };
  std::vector<Tensor> gather_state(bool second_moment) const;
  // The gradients this rank counts in the global norm: each element once over the world.
  std::vector<Tensor> norm_counted_grads() const;
  std::vector<OptimTensor> clip_tensors() const;

  Model& model_;
  ParallelContext ctx_;
  OptimizerConfig config_;
  bool distributed_, overlap_grad_reduce_, overlap_param_gather_;
  std::vector<Parameter*> parameters_;                // model order
  std::vector<std::unique_ptr<GradBucketSet>> sets_;  // dense, then expert (when present)
  std::vector<bool> set_is_expert_;
  std::vector<std::vector<int>> set_world_ranks_;  // per set: its group's world ranks
  std::unordered_map<const Parameter*, Location> locations_;
  std::unique_ptr<AdamW> adam_;                 // plain: one OptimTensor per parameter
  std::unique_ptr<DistributedOptimizer> dist_;  // distributed: the owned segments
  int64_t state_bytes_ = 0;
  bool last_micro_batch_ = true;
  int launched_in_backward_ = 0;
};

}  // namespace moefold
