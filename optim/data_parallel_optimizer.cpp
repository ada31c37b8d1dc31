#include "optim/data_parallel_optimizer.h"

#include "optim/grad_clip.h"
#include "parallel/self_communicator.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

DataParallelOptimizer::DataParallelOptimizer(std::vector<DpParameter> parameters,
                                             const OptimizerConfig& optimizer,
                                             const ParallelContext& ctx)
    : ctx_(ctx),
      config_(optimizer),
      distributed_(ctx.config.use_distributed_optimizer),
      overlap_param_gather_(ctx.config.overlap_param_gather &&
                            ctx.config.use_distributed_optimizer),
      parameters_(std::move(parameters)),
      locations_(parameters_.size()) {
  for (bool expert : {false, true}) {
    std::vector<BucketEntry> entries;  // backward order: the reverse of the parameter order
    for (int i = static_cast<int>(parameters_.size()) - 1; i >= 0; --i) {
      if (parameters_[i].is_expert == expert) {
        entries.push_back({i, parameters_[i].value->numel()});
      }
    }
    if (entries.empty()) continue;
    // Under FSSDP the expert shards' gradients are already summed over expert-DP by the MoE
    // layers' sparse reduce-scatter: nothing is left to reduce.
    std::shared_ptr<Communicator> group = ctx_.dp_cp;
    if (expert) {
      group = ctx_.config.moe_fssdp ? std::make_shared<SelfCommunicator>() : ctx_.edp;
    }
    const int set_index = static_cast<int>(sets_.size());
    sets_.push_back(std::make_unique<GradBucketSet>(
        plan_buckets(std::move(entries), ctx.config.ddp_bucket_size, group->size()), group,
        distributed_));
    int world_rank = ctx.world->rank();
    set_world_ranks_.emplace_back(static_cast<size_t>(group->size()));
    group->all_gather(&world_rank, 1, set_world_ranks_.back().data(), CommDType::kInt32);
    const GradBucketSet& set = *sets_.back();
    for (int e = 0; e < static_cast<int>(set.layout().entries.size()); ++e) {
      const int id = set.layout().entries[e].id;
      DpParameter& p = parameters_[id];
      locations_[id] = {set_index, e};
      *p.grad = set.grad_view(e).view(p.shape);
      if (distributed_) {
        const Tensor flat = set.param_view(e);
        ops::copy(flat, p.value->view({p.value->numel()}));
        *p.value = flat.view(p.shape);
      }
    }
  }

  const int64_t before = MemoryStats::current_bytes();
  if (distributed_) {
    // ZeRO ownership: this rank updates the parameter pieces in its owned slice of each bucket.
    std::vector<ShardSegment> segments;
    for (const auto& set : sets_) {
      for (const OwnedSegment& o : owned_segments(set->layout(), set->group().rank())) {
        const int id = set->layout().entries[o.entry].id;
        const DpParameter& p = parameters_[id];
        segments.push_back(
            {id, o.entry_offset,
             set->param_buffer().slice_rows(o.buffer_offset, o.buffer_offset + o.numel),
             set->grad_shard().slice_rows(o.shard_offset, o.shard_offset + o.numel), p.weight_decay,
             p.name});
      }
    }
    dist_ = std::make_unique<DistributedOptimizer>(config_, std::move(segments));
  } else {
    adam_ = std::make_unique<AdamW>(config_, whole_tensors());
  }
  state_bytes_ = MemoryStats::current_bytes() - before;
}

std::vector<OptimTensor> DataParallelOptimizer::whole_tensors() const {
  std::vector<OptimTensor> tensors;
  for (const DpParameter& p : parameters_) {
    tensors.push_back({p.name, *p.value, *p.grad, p.weight_decay});
  }
  return tensors;
}

void DataParallelOptimizer::zero_grads() {
  for (auto& set : sets_) set->zero_grads();
}

void DataParallelOptimizer::mark_grad_ready(int parameter) {
  const Location& at = locations_.at(static_cast<size_t>(parameter));
  sets_[at.set]->mark_ready(at.entry);
}

int DataParallelOptimizer::launched_grad_reduces() const {
  int launched = 0;
  for (const auto& set : sets_) launched += set->launched_grad_reduces();
  return launched;
}

void DataParallelOptimizer::finish_grad_reduction() {
  for (auto& set : sets_) set->launch_remaining_grad_reduces();
  for (auto& set : sets_) set->wait_grad_reduces();
}

std::vector<Tensor> DataParallelOptimizer::norm_counted_grads() const {
  const RankCoordinates& c = ctx_.coords;
  std::vector<Tensor> counted;
  if (dist_) {
    // The owned slices partition every bucket over its DP group.
    for (const ShardSegment& s : dist_->segments()) {
      if (parameters_[s.param_index].norm_counted_copy) counted.push_back(s.grad);
    }
  } else {
    // After the all-reduce the DP (and CP) copies are identical: the first one counts.
    for (const DpParameter& p : parameters_) {
      const bool first_dp_copy = p.is_expert ? c.edp_rank == 0 || p.split_over_expert_data
                                             : c.dp_rank == 0 && c.cp_rank == 0;
      if (first_dp_copy && p.norm_counted_copy) counted.push_back(*p.grad);
    }
  }
  return counted;
}

double DataParallelOptimizer::grad_norm() const {
  return global_grad_norm(norm_counted_grads(), *ctx_.world);
}

std::vector<OptimTensor> DataParallelOptimizer::clip_tensors() const {
  std::vector<OptimTensor> out;
  for (const auto& set : sets_) {
    const Tensor& g = distributed_ ? set->grad_shard() : set->grad_buffer();
    out.push_back({"gradients", g, g, false});
  }
  return out;
}

void DataParallelOptimizer::clip(double norm, double clip_grad) {
  clip_gradients(clip_tensors(), norm, clip_grad);
}

void DataParallelOptimizer::step(double lr) {
  if (!dist_) {
    adam_->step(lr);
    return;
  }
  dist_->step(lr);
  for (auto& set : sets_) set->launch_param_gathers();
  if (!overlap_param_gather_) wait_all_param_gathers();
}

void DataParallelOptimizer::wait_param_gather(int parameter) {
  const Location& at = locations_.at(static_cast<size_t>(parameter));
  GradBucketSet& set = *sets_[at.set];
  set.wait_param_gather(set.layout().entry_bucket[at.entry]);
}

void DataParallelOptimizer::wait_all_param_gathers() {
  for (auto& set : sets_)
    if (set->distributed()) set->wait_param_gathers();
}

int64_t DataParallelOptimizer::optimizer_steps() const {
  return dist_ ? dist_->steps() : adam_->steps();
}

double DataParallelOptimizer::grad_reduce_wait_seconds() const {
  double s = 0;
  for (const auto& set : sets_) s += set->wait_times().grad_reduce_wait;
  return s;
}

double DataParallelOptimizer::param_gather_wait_seconds() const {
  double s = 0;
  for (const auto& set : sets_) s += set->wait_times().param_gather_wait;
  return s;
}

int DataParallelOptimizer::num_buckets() const {
  int n = 0;
  for (const auto& set : sets_) n += static_cast<int>(set->layout().buckets.size());
  return n;
}

// Each rank writes the moments of its owned elements into zeroed full tensors; a sum over the
// DP group then fills in everyone else's (x + 0 is exact).
std::vector<Tensor> DataParallelOptimizer::gather_state(bool second_moment) const {
  std::vector<Tensor> exp_avg, exp_avg_sq;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (adam_) {
      exp_avg.push_back(adam_->exp_avg(i));
      exp_avg_sq.push_back(adam_->exp_avg_sq(i));
      continue;
    }
    exp_avg.push_back(Tensor::zeros(parameters_[i].shape));
    exp_avg_sq.push_back(Tensor::zeros(parameters_[i].shape));
  }
  if (adam_) return second_moment ? exp_avg_sq : exp_avg;
  dist_->copy_state_to(exp_avg, exp_avg_sq);
  std::vector<Tensor>& out = second_moment ? exp_avg_sq : exp_avg;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    sets_[locations_[i].set]->group().all_reduce(std::span<float>(out[i].data(), out[i].numel()));
  }
  return out;
}

std::vector<Tensor> DataParallelOptimizer::gather_exp_avg() const { return gather_state(false); }
std::vector<Tensor> DataParallelOptimizer::gather_exp_avg_sq() const {
  return gather_state(true);
}

void DataParallelOptimizer::scatter_state(const std::vector<Tensor>& exp_avg,
                                          const std::vector<Tensor>& exp_avg_sq, int64_t steps) {
  MOEFOLD_CHECK(exp_avg.size() == parameters_.size() && exp_avg_sq.size() == parameters_.size(),
                "optimizer state for " << exp_avg.size() << " tensors, the model has "
                                       << parameters_.size());
  if (adam_) {
    for (size_t i = 0; i < parameters_.size(); ++i) {
      ops::copy(adam_->exp_avg(i), exp_avg[i]);
      ops::copy(adam_->exp_avg_sq(i), exp_avg_sq[i]);
    }
    adam_->set_steps(steps);
    return;
  }
  dist_->load_state_from(exp_avg, exp_avg_sq);
  dist_->set_steps(steps);
}

std::unique_ptr<AdamW> DataParallelOptimizer::checkpoint_optimizer() {
  wait_all_param_gathers();
  auto full = std::make_unique<AdamW>(config_, whole_tensors());
  const std::vector<Tensor> exp_avg = gather_exp_avg(), exp_avg_sq = gather_exp_avg_sq();
  for (size_t i = 0; i < parameters_.size(); ++i) {
    ops::copy(full->exp_avg(i), exp_avg[i]);
    ops::copy(full->exp_avg_sq(i), exp_avg_sq[i]);
  }
  full->set_steps(optimizer_steps());
  return full;
}

void DataParallelOptimizer::restore_optimizer(const AdamW& loaded) {
  MOEFOLD_CHECK(loaded.tensors().size() == parameters_.size());
  std::vector<Tensor> exp_avg, exp_avg_sq;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    MOEFOLD_CHECK(loaded.tensors()[i].name == parameters_[i].name,
                  "optimizer tensor " << loaded.tensors()[i].name << " where the model has "
                                      << parameters_[i].name);
    exp_avg.push_back(loaded.exp_avg(i));
    exp_avg_sq.push_back(loaded.exp_avg_sq(i));
  }
  scatter_state(exp_avg, exp_avg_sq, loaded.steps());
}

OptimizerCheckpointState DataParallelOptimizer::optimizer_checkpoint_state() {
  wait_all_param_gathers();
  OptimizerCheckpointState state;
  state.steps = optimizer_steps();
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const DpParameter& p = parameters_[i];
    OptimizerStateTensor t{p.name, {}, {ctx_.world->rank()}};
    if (adam_) {
      t.runs.push_back({0, p.value->numel(), adam_->exp_avg(i).data(),
                        adam_->exp_avg_sq(i).data()});
    } else {
      t.shard_group = set_world_ranks_[locations_[i].set];
    }
    state.tensors.push_back(std::move(t));
  }
  if (dist_) {
    for (size_t k = 0; k < dist_->segments().size(); ++k) {
      const ShardSegment& s = dist_->segments()[k];
      state.tensors[s.param_index].runs.push_back({s.param_offset, s.param.numel(),
                                                   dist_->exp_avg(k).data(),
                                                   dist_->exp_avg_sq(k).data()});
    }
  }
  return state;
}

void DataParallelOptimizer::set_optimizer_steps(int64_t steps) {
  if (dist_) {
    dist_->set_steps(steps);
  } else {
    adam_->set_steps(steps);
  }
}

}  // namespace moefold
