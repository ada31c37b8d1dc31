// The data-parallel optimizer (DESIGN.md "The step"): gradient buckets with overlapped
// reduction, ZeRO ownership (the distributed optimizer's owned 1/DP segments), the gradient norm
// and clipping, and AdamW, plain or distributed. It sees parameters only as DpParameter
// descriptions; trainer/data_parallel.h describes the model's and ties the model's hooks to it.
//
// On construction every parameter's gradient (and, with the distributed optimizer, its value) is
// re-pointed at a view of a flat bucket buffer (parallel/grad_buckets.h): one bucket set for the
// dense parameters, reduced over DP×CP, and one for the routed-expert parameters, reduced over
// expert-DP (under FSSDP the MoE layers have reduced those already). The per-step calls, in
// order:
//
//   zero_grads()
//   mark_grad_ready(i)              parameter i's gradient is final (overlap_grad_reduce)
//   finish_grad_reduction()         launch what backward did not, wait for all of it
//   grad_norm(), clip(norm, max)    each element counted once over the whole world
//   step(lr)                        AdamW (on the owned slices), then the parameter all-gathers;
//                                   with overlap_param_gather they finish in the next forward,
//                                   wait_param_gather(i) before parameter i's first use
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "optim/optim_config.h"
#include "optim/optimizer_state.h"
#include "parallel/context.h"
#include "parallel/grad_buckets.h"

namespace moefold {

// One parameter as the data-parallel optimizer sees it.
struct DpParameter {
  std::string name;
  Tensor* value = nullptr;     // re-pointed at the flat parameter buffer (distributed optimizer)
  Tensor* grad = nullptr;      // re-pointed at the flat gradient buffer
  std::vector<int64_t> shape;  // the local shape
  bool weight_decay = true;
  bool is_expert = false;               // reduced over expert-DP instead of DP×CP
  bool split_over_expert_data = false;  // an FSSDP shard: expert-DP ranks hold other elements
  // Whether this rank's copy is the one the gradient norm counts among copies that differ only
  // by model-parallel rank (TP/ETP), and not a pipeline's second copy of a tied embedding.
  bool norm_counted_copy = true;
};

class DataParallelOptimizer {
 public:
  // The tensors `parameters` point at must outlive this object and be initialised (the values
  // are copied into the flat buffer with the distributed optimizer).
  DataParallelOptimizer(std::vector<DpParameter> parameters, const OptimizerConfig& optimizer,
                        const ParallelContext& ctx);
  DataParallelOptimizer(const DataParallelOptimizer&) = delete;
  DataParallelOptimizer& operator=(const DataParallelOptimizer&) = delete;

  void zero_grads();
  void mark_grad_ready(int parameter);
  int launched_grad_reduces() const;  // buckets launched since zero_grads
  void finish_grad_reduction();
  // sqrt(Σ g²) over every gradient element of the model, each counted once over all ranks
  // (collective over ctx.world).
  double grad_norm() const;
  // Scales the gradients this rank updates by clip_grad / (norm + 1e-6) when norm > clip_grad.
  void clip(double norm, double clip_grad);
  void step(double lr);
  void wait_param_gather(int parameter);  // its bucket's all-gather (overlap_param_gather)
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

  // Checkpoints stay layout-independent: the Adam moments of every parameter at its local shape,
  // in parameter order. With the distributed optimizer gathering is collective over the DP
  // groups (every rank gets every element); scattering is local (each rank keeps its slices).
  std::vector<Tensor> gather_exp_avg() const;
  std::vector<Tensor> gather_exp_avg_sq() const;
  void scatter_state(const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                     int64_t steps);
  // The same state as an AdamW over the parameters (for checkpoints of a whole AdamW), and back.
  // Waits for the parameter gathers first, so the values are complete too.
  std::unique_ptr<AdamW> checkpoint_optimizer();  // collective like gather_exp_avg
  void restore_optimizer(const AdamW& loaded);
  // The Adam state as it is held, for save_checkpoint and load_checkpoint (which fills it in
  // place): whole tensors, or with the distributed optimizer only this rank's owned segments,
  // so no rank ever holds a full-size copy. Waits for the parameter gathers first, so the
  // values are complete too. Apply a loaded step count with set_optimizer_steps.
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
  std::vector<OptimTensor> whole_tensors() const;

  ParallelContext ctx_;
  OptimizerConfig config_;
  bool distributed_, overlap_param_gather_;
  std::vector<DpParameter> parameters_;
  std::vector<std::unique_ptr<GradBucketSet>> sets_;  // dense, then expert (when present)
  std::vector<std::vector<int>> set_world_ranks_;     // per set: its group's world ranks
  std::vector<Location> locations_;                   // per parameter
  std::unique_ptr<AdamW> adam_;                 // plain: one OptimTensor per parameter
  std::unique_ptr<DistributedOptimizer> dist_;  // distributed: the owned segments
  int64_t state_bytes_ = 0;
};

}  // namespace moefold
