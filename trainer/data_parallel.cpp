#include "trainer/data_parallel.h"

namespace moefold {
namespace {

bool split_over(const Parameter& p, ShardGroup group) {
  for (const AxisSplit& s : p.layout.splits)
    if (s.group == group && s.parts > 1) return true;
  return false;
}

// Whether this rank counts the parameter's elements among the copies that differ only by
// model-parallel rank: TP/ETP ranks hold identical copies of a tensor not split over them.
bool first_model_parallel_copy(const Parameter& p, const RankCoordinates& c) {
  return p.is_expert ? c.etp_rank == 0 || split_over(p, ShardGroup::kExpertTensor)
                     : c.tp_rank == 0 || split_over(p, ShardGroup::kTensor);
}

// The model's parameters, in model order, as the data-parallel optimizer sees them.
std::vector<DpParameter> describe_parameters(Model& model, const RankCoordinates& c) {
  std::vector<DpParameter> out;
  for (Parameter* p : model.parameters()) {
    out.push_back({p->name(), &p->value, &p->grad, p->layout.local_shape, p->weight_decay,
                   p->is_expert, split_over(*p, ShardGroup::kExpertData),
                   first_model_parallel_copy(*p, c) && !model.is_embedding_copy(p)});
  }
  return out;
}

}  // namespace

DataParallelState::DataParallelState(Model& model, const OptimizerConfig& optimizer,
                                     const ParallelContext& ctx)
    : DataParallelOptimizer(describe_parameters(model, ctx.coords), optimizer, ctx),
      model_(model),
      ctx_(ctx),
      overlap_grad_reduce_(ctx.config.overlap_grad_reduce) {
  const std::vector<Parameter*> parameters = model.parameters();
  for (int i = 0; i < static_cast<int>(parameters.size()); ++i) index_[parameters[i]] = i;
  if (overlap_grad_reduce_) {
    model_.set_grad_ready_hook([this](std::span<Parameter* const> params) {
      if (!last_micro_batch_) return;  // earlier micro-batches still add to every gradient
      for (Parameter* p : params) {
        if (p == model_.shared_embedding()) continue;  // after its pipeline sum (finish)
        mark_grad_ready(index_.at(p));
      }
    });
  }
  if (ctx.config.overlap_param_gather && ctx.config.use_distributed_optimizer) {
    model_.set_forward_pre_hook([this](std::span<Parameter* const> params) {
      for (Parameter* p : params) wait_param_gather(index_.at(p));
    });
  }
}

DataParallelState::~DataParallelState() {
  model_.set_grad_ready_hook(nullptr);
  model_.set_forward_pre_hook(nullptr);
}

void DataParallelState::start_step() {
  zero_grads();
  last_micro_batch_ = true;
}

void DataParallelState::finish_grad_reduction() {
  launched_in_backward_ = launched_grad_reduces();
  // Tied embeddings under pipeline parallelism: the first stage's table and the last stage's
  // copy sum their gradients over the embedding group, so both take the same step.
  if (Parameter* shared = model_.shared_embedding()) {
    ctx_.embedding->all_reduce(std::span<float>(shared->grad.data(), shared->grad.numel()));
    if (overlap_grad_reduce_) mark_grad_ready(index_.at(shared));
  }
  DataParallelOptimizer::finish_grad_reduction();
}

}  // namespace moefold
