#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint.h"
#include "data/dataset_builder.h"
#include "data/default_corpus.h"
#include "trainer/config_schema.h"
#include "trainer/memory_plan.h"
#include "optim/lr_schedule.h"
#include "parallel/agreed_status.h"
#include "parallel/watchdog.h"
#include "model/router.h"
#include "tensor/backend.h"
#include "tensor/ops.h"
#include "trainer/peak_flops.h"
#include "trainer/placement_metrics.h"
#include "tensor/wall_clock.h"

namespace moefold {
namespace {

// `data.corpus` with no data_path: rank 0 prepares the corpus (tokenized once, then cached) while
// the others wait, so that no rank reads a half-written dataset.
absl::Status resolve_corpus(DataConfig& data, const ParallelContext& ctx) {
  if (data.corpus.empty() || !data.data_path.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> prefix = absl::UnknownError("not prepared by this rank");
  if (ctx.world->rank() == 0) prefix = prepare_default_corpus(data, std::cout);
  int failed = prefix.ok() ? 0 : 1;
  ctx.world->broadcast(std::span<int>(&failed, 1), 0);
  if (failed && ctx.world->rank() == 0) return prefix.status();
  if (failed) return absl::InternalError("rank 0 failed to prepare data.corpus " + data.corpus);
  if (ctx.world->rank() != 0) prefix = prepare_default_corpus(data, std::cout);  // now cached
  if (!prefix.ok()) return prefix.status();
  data.data_path = {*prefix};
  return absl::OkStatus();
}

// Rank 0's status on every rank, for what rank 0 alone does (the metrics file). Collective.
absl::Status agree_on_rank0(const absl::Status& local, Communicator& world) {
  std::string message(local.message());
  int64_t header[2] = {static_cast<int64_t>(local.code()), static_cast<int64_t>(message.size())};
  world.broadcast(std::span<int64_t>(header, 2), 0);
  if (header[0] == 0) return absl::OkStatus();
  message.resize(static_cast<size_t>(header[1]));
  world.broadcast(message.data(), header[1], CommDType::kUInt8, 0);
  return mark_agreed(absl::Status(static_cast<absl::StatusCode>(header[0]), message));
}

// The index of MoE layer `layer` among the model's MoE layers (all pipeline stages).
int moe_layer_index(const ModelConfig& config, int layer) {
  int index = 0;
  for (int l = 0; l < layer; ++l) index += config.is_moe_layer(l) ? 1 : 0;
  return index;
}

// The data's micro-batches as the model's inputs (moved, not copied).
absl::StatusOr<std::vector<TokenBatch>> model_inputs(
    absl::StatusOr<std::vector<MicroBatch>> data) {
  if (!data.ok()) return data.status();
  std::vector<TokenBatch> inputs;
  inputs.reserve(data->size());
  for (MicroBatch& mb : *data) {
    inputs.push_back({mb.batch, mb.seq, std::move(mb.tokens), std::move(mb.labels),
                      std::move(mb.loss_mask)});
  }
  return inputs;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::create(const Recipe& recipe,
                                                         const ParallelContext& ctx) {
  std::unique_ptr<Trainer> trainer(new Trainer(recipe, ctx));
  if (absl::Status s = trainer->setup(); !s.ok()) return s;
  return trainer;
}

absl::Status Trainer::setup() {
  const int world = ctx_.world->size();
  const TrainingConfig& train = recipe_.training;
  if (train.device == TrainingDevice::kCuda && !has_backend(Device::kCuda)) {
    char host[256] = "?";
    gethostname(host, sizeof(host) - 1);
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: training.device: cuda, but no CUDA device backend is available on rank %d (host "
        "%s): this build has no CUDA backend or the rank sees no GPU (use training.device: cpu)",
        recipe_.source, ctx_.world->rank(), host));
  }
  // Every tensor the model, optimizer and stash create from here on lives on the rank's device.
  set_default_device(train.device == TrainingDevice::kCuda ? Device::kCuda : Device::kCpu);
  backend_for(default_device()).set_threads(train.blas_threads);

  ModelConfig& model_config = recipe_.model;
  auto tokenizer = make_tokenizer(recipe_.data.tokenizer_type, recipe_.data.vocab_file,
                                  recipe_.data.merge_file, model_config.vocab_size);
  if (!tokenizer.ok()) return tokenizer.status();
  tokenizer_ = std::move(*tokenizer);
  if (model_config.vocab_size == 0 || tokenizer_->name() == "null") {
    model_config.vocab_size = static_cast<int>(tokenizer_->vocab_size());
  } else if (model_config.vocab_size < tokenizer_->vocab_size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: model.vocab_size %d is smaller than the %s tokenizer's vocabulary %d",
        recipe_.source, model_config.vocab_size, tokenizer_->name(), tokenizer_->vocab_size()));
  }

  // Before anything of the model's or the data's size is allocated.
  if (absl::Status s = check_memory_plan(recipe_, world, available_bytes_per_rank()); !s.ok()) {
    return s;
  }

  const int dp = ctx_.dp->size();
  const int64_t global_batch = train.global_batch_size > 0
                                   ? train.global_batch_size
                                   : int64_t{train.micro_batch_size} * dp;
  recipe_.training.global_batch_size = static_cast<int>(global_batch);
  const int64_t evals = train.eval_interval > 0 ? train.train_iters / train.eval_interval + 1 : 1;
  GptDatasetsOptions data_options;
  data_options.seq_length = model_config.seq_length;
  data_options.seed = train.seed;
  data_options.vocab_size = tokenizer_->vocab_size();  // ids in the padding are data errors
  data_options.num_samples = {int64_t{train.train_iters} * global_batch,
                              evals * train.eval_iters * global_batch, 0};
  if (absl::Status s = resolve_corpus(recipe_.data, ctx_); !s.ok()) return s;
  auto datasets = build_gpt_datasets(recipe_.data, data_options);
  if (!datasets.ok()) return datasets.status();
  valid_data_ = datasets->valid;
  train_data_ = datasets->train;
  if (absl::Status s = build_train_batches(0); !s.ok()) return s;

  if (absl::Status s = Model::validate(model_config, ctx_); !s.ok()) return s;
  model_ = std::make_unique<Model>(model_config, ctx_);
  if (recipe_.training.bf16) model_->set_compute_dtype(DType::kBFloat16);
  model_->set_recompute_activations(recipe_.training.recompute_granularity ==
                                    RecomputeGranularity::kFull);
  model_->init_parameters(train.seed);
  data_parallel_ = std::make_unique<DataParallelState>(*model_, recipe_.optimizer, ctx_);
  pipeline_ = std::make_unique<PipelineExecutor>(*model_, ctx_);
  // Each pipeline stage holds its own modules: the model's counts are their sums.
  std::vector<int64_t> parameter_counts = {model_->parameter_count(),
                                           model_->active_parameter_count()};
  ctx_.pp->all_reduce(std::span<int64_t>(parameter_counts));
  active_parameters_ = parameter_counts[1];

  const LoggingConfig& log = recipe_.logging;
  const std::string metrics_path =
      log.metrics_path.empty() ? log.run_dir + "/metrics.jsonl" : log.metrics_path;
  const bool rank0 = ctx_.world->rank() == 0;
  metrics_ = std::make_unique<MetricsLogger>(metrics_path, rank0 || log.all_ranks, rank0,
                                             log.log_interval);
  // A resume keeps the records up to its checkpoint (load_checkpoint starts the file then).
  if (recipe_.checkpoint.load.empty()) {
    if (absl::Status s = agree_on_rank0(metrics_->start(0), *ctx_.world); !s.ok()) return s;
  }
  peak_ = resolve_peak_flops(train.peak_flops, default_device(), DType::kFloat32, *ctx_.world);
  const double per_rank = peak_.per_rank;
  peak_flops_ = per_rank * world;
  // The library launch resolved `auto` to; unresolved (tests, tools) it means MPI.
  const char* library = world == 1                                               ? ""
                        : ctx_.config.communicator == CommunicatorBackend::kNccl ? " over NCCL"
                                                                                : " over MPI";
  metrics_->print(absl::StrFormat(
      "moefold: %d rank(s)%s, DP %d | %d layers, hidden %d, %d experts top-%d, vocab %d | "
      "%.1fM parameters (%.1fM active per token) | global batch %d x %d tokens | "
      "peak %.1f GFLOP/s per rank (%s) | metrics -> %s",
      world, library, dp, model_config.num_layers, model_config.hidden_size,
      model_config.moe.num_experts, model_config.moe.moe_router_topk,
      model_config.padded_vocab_size(), parameter_counts[0] / 1e6, parameter_counts[1] / 1e6,
      global_batch, model_config.seq_length, per_rank / 1e9, peak_.source, metrics_path));
  return absl::OkStatus();
}

// The DP layout picks this rank's slice of every global batch.
BatchIteratorOptions Trainer::batch_options() const {
  BatchIteratorOptions options;
  options.global_batch_size = recipe_.training.global_batch_size;
  options.micro_batch_size = recipe_.training.micro_batch_size;
  options.data_parallel_rank = ctx_.coords.dp_rank;
  options.data_parallel_size = ctx_.dp->size();
  options.eod_id = tokenizer_->eod_id();
  options.eod_mask_loss = recipe_.data.eod_mask_loss;
  return options;
}

absl::Status Trainer::build_train_batches(int64_t consumed_samples) {
  auto batches = BatchIterator::create(train_data_, batch_options(), consumed_samples);
  if (!batches.ok()) return batches.status();
  train_batches_ = std::make_unique<BatchIterator>(std::move(*batches));
  return absl::OkStatus();
}

absl::Status Trainer::load_checkpoint(const std::string& path, bool model_only) {
  watchdog::set_position(start_iteration_, "checkpoint load");
  CheckpointIoStats stats;
  absl::StatusOr<CheckpointState> state;
  if (model_only) {
    state = moefold::load_checkpoint(path, model_->registry(), static_cast<AdamW*>(nullptr),
                                     ctx_, recipe_.model, &stats);
  } else {
    // Filled in place: each rank reads only the Adam state it holds (its shard under ZeRO).
    OptimizerCheckpointState optimizer = data_parallel_->optimizer_checkpoint_state();
    state = moefold::load_checkpoint(path, model_->registry(), optimizer, ctx_, recipe_.model,
                                     &stats);
    if (state.ok()) data_parallel_->set_optimizer_steps(optimizer.steps);
  }
  if (!state.ok()) return state.status();
  start_iteration_ = static_cast<int>(state->iteration);
  if (!model_only) {
    if (absl::Status s = agree_on_rank0(metrics_->start(state->iteration), *ctx_.world);
        !s.ok()) {
      return s;
    }
  }
  metrics_->print(describe_checkpoint_io("loaded", stats));
  return build_train_batches(state->consumed_samples);
}

absl::Status Trainer::save_checkpoint(int iterations_done) {
  watchdog::set_position(iterations_done, "checkpoint save");
  CheckpointState state;
  state.iteration = iterations_done;
  state.consumed_samples = train_batches_->consumed_samples();
  state.recipe_text = recipe_to_yaml(recipe_);
  // Each rank writes only the Adam state it holds (its shard under ZeRO).
  const OptimizerCheckpointState optimizer = data_parallel_->optimizer_checkpoint_state();
  auto stats = moefold::save_checkpoint(recipe_.checkpoint.save, state, model_->registry(),
                                        optimizer, ctx_, recipe_.model,
                                        {recipe_.checkpoint.keep_last});
  if (!stats.ok()) return stats.status();
  metrics_->print(describe_checkpoint_io("saved", *stats));
  return absl::OkStatus();
}

bool Trainer::agreed_stop(double training_seconds) {
  const double limit_minutes = recipe_.training.exit_duration_in_mins;
  // Largest wins: a signal number (1..64) over the time limit (65).
  constexpr int64_t kTimeLimit = 65;
  int64_t request = stop_signal_ != nullptr ? stop_signal_->load() : 0;
  if (request == 0 && limit_minutes > 0 && training_seconds > limit_minutes * 60) {
    request = kTimeLimit;
  }
  ctx_.world->all_reduce(std::span<int64_t>(&request, 1), ReduceOp::kMax);
  if (request == 0) return false;
  if (request == kTimeLimit) {
    stop_reason_ = absl::StrFormat("training.exit_duration_in_mins (%g) reached", limit_minutes);
  } else {
    const char* name = sigabbrev_np(static_cast<int>(request));
    stop_reason_ = absl::StrCat("SIG", name ? name : absl::StrCat(request));
  }
  return true;
}

absl::Status Trainer::train() {
  const TrainingConfig& train = recipe_.training;
  const CheckpointConfig& checkpoint = recipe_.checkpoint;
  const auto training_start = std::chrono::steady_clock::now();
  for (int iteration = start_iteration_; iteration < train.train_iters; ++iteration) {
    auto step = train_step(iteration);
    if (!step.ok()) return step.status();
    metrics_->log_iteration(*step);
    const int done = iteration + 1;
    const bool last = done == train.train_iters;
    if (train.eval_interval > 0 && (done % train.eval_interval == 0 || last)) {
      auto eval = evaluate(train.eval_iters);
      if (!eval.ok()) return eval.status();
      metrics_->log_evaluation(done, eval->loss, eval->tokens);
    }
    const bool saved = !checkpoint.save.empty() &&
                       ((checkpoint.save_interval > 0 && done % checkpoint.save_interval == 0) ||
                        last);
    if (saved) {
      if (absl::Status s = save_checkpoint(done); !s.ok()) return s;
    }
    watchdog::set_position(done, "step boundary (stop agreement)");
    if (last || !agreed_stop(seconds_since(training_start))) continue;
    // Preempted or out of time: keep the work (unless this boundary just saved it) and stop.
    if (!checkpoint.save.empty() && !saved) {
      if (absl::Status s = save_checkpoint(done); !s.ok()) return s;
    }
    metrics_->print(absl::StrFormat(
        "moefold: stopping after iteration %d of %d: %s; %s", done, train.train_iters,
        stop_reason_,
        checkpoint.save.empty()
            ? "no checkpoint.save is set, so nothing was saved"
            : absl::StrCat("resume with --load ", checkpoint.save)));
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

// The step of DESIGN.md, top to bottom.
absl::StatusOr<IterationMetrics> Trainer::train_step(int iteration) {
  const auto start = std::chrono::steady_clock::now();
  watchdog::set_position(iteration + 1, "forward/backward");
  model_->mark_parameters_changed();  // the last step or a load moved the masters
  auto batches = model_inputs(train_batches_->next_global_batch());  // this rank's micro-batches
  if (!batches.ok()) return batches.status();
  const LossScales scales = loss_scales(*batches);

  const ExpertWorkspace* fssdp = model_->expert_workspace();
  const int64_t gathered_before = fssdp ? fssdp->experts_gathered : 0;
  const int64_t slots_before = fssdp ? fssdp->expert_slots : 0;
  const double blocked_before = fssdp ? fssdp->blocked_seconds : 0;
  reset_placement_stats(*model_);
  const double dp_wait_before =
      data_parallel_->grad_reduce_wait_seconds() + data_parallel_->param_gather_wait_seconds();
  data_parallel_->start_step();
  const int micro_batches = static_cast<int>(batches->size());
  const std::vector<MicroBatchStats> forwards = pipeline_->run(
      pipeline_schedule_kind(ctx_.config), *batches, &scales,
      [&](int mb) { data_parallel_->set_last_micro_batch(mb + 1 == micro_batches); });
  // This stage's share: the LM loss on the last stage, each MoE layer's terms where it lives.
  double lm_loss_sum = 0, aux_loss = 0, z_loss = 0;
  const int num_moe_layers = moe_layer_index(recipe_.model, recipe_.model.num_layers);
  std::vector<std::vector<int64_t>> expert_counts(
      num_moe_layers, std::vector<int64_t>(recipe_.model.moe.num_experts, 0));
  std::vector<int64_t> dropped(num_moe_layers, 0), assignments(num_moe_layers, 0);
  for (double sum : lm_loss_sums(forwards)) lm_loss_sum += sum;
  for (const MicroBatchStats& stats : forwards) {
    aux_loss += stats.aux_loss * scales.aux;
    z_loss += stats.z_loss * scales.aux;
    for (const MoeLayerStats& layer : stats.moe) {
      const int l = moe_layer_index(recipe_.model, layer.layer);
      for (size_t e = 0; e < expert_counts[l].size(); ++e)
        expert_counts[l][e] += layer.tokens_per_expert[e];
      dropped[l] += layer.dropped;
      assignments[l] += layer.assignments;
    }
  }
  watchdog::set_position(iteration + 1, "gradient reduction");
  data_parallel_->finish_grad_reduction();  // DP/EDP reductions, started in backward
  watchdog::set_position(iteration + 1, "loss and expert-count reduction");

  // Losses and expert counts of the whole global batch: one reduction for all of them.
  std::vector<double> losses = {lm_loss_sum * scales.lm, aux_loss, z_loss};
  ctx_.dp_cp->all_reduce(std::span<double>(losses));
  ctx_.pp->all_reduce(std::span<double>(losses));  // zeros on the stages without the term
  std::vector<int64_t> counts;
  for (size_t l = 0; l < expert_counts.size(); ++l) {
    counts.insert(counts.end(), expert_counts[l].begin(), expert_counts[l].end());
    counts.push_back(dropped[l]);
    counts.push_back(assignments[l]);
  }
  counts.push_back(fssdp ? fssdp->experts_gathered - gathered_before : 0);
  counts.push_back(fssdp ? fssdp->expert_slots - slots_before : 0);
  const size_t placement_first = counts.size();
  if (ctx_.config.fssdp_spare_slots > 0) {
    const std::vector<int64_t> placement = placement_counts(
        *model_, recipe_.model, ctx_.tp_cp_dp->rank(), ctx_.tp_cp_dp->size());
    counts.insert(counts.end(), placement.begin(), placement.end());
  }
  ctx_.tp_cp_dp->all_reduce(std::span<int64_t>(counts));
  ctx_.pp->all_reduce(std::span<int64_t>(counts));
  size_t at = 0;
  for (size_t l = 0; l < expert_counts.size(); ++l) {
    for (int64_t& c : expert_counts[l]) c = counts[at++];
    dropped[l] = counts[at++];
    assignments[l] = counts[at++];
  }
  const int64_t experts_gathered = counts[at], expert_slots = counts[at + 1];
  // A non-finite loss or gradient (training.nonfinite): nothing after it may change any state.
  std::string nonfinite;  // what was not finite; empty when everything was
  if (!std::isfinite(losses[0]) || !std::isfinite(losses[1]) || !std::isfinite(losses[2])) {
    nonfinite = absl::StrFormat("the loss is not finite (lm %g, aux %g, z %g)", losses[0],
                                losses[1], losses[2]);
  }
  double grad_norm = 0;
  if (nonfinite.empty()) {
    watchdog::set_position(iteration + 1, "gradient norm");
    grad_norm = data_parallel_->grad_norm();
    if (!std::isfinite(grad_norm)) nonfinite = first_nonfinite_gradient();
  }
  const double lr = learning_rate(recipe_.optimizer, iteration, recipe_.training.train_iters);
  if (!nonfinite.empty()) {
    const TrainingConfig& train = recipe_.training;
    const bool skip = train.nonfinite == NonfinitePolicy::kSkip;
    if (!skip || ++consecutive_skips_ > train.nonfinite_max_consecutive_skips) {
      // Every rank holds the same all-reduced losses and the same agreed gradient report.
      return mark_agreed(absl::InternalError(absl::StrFormat(
          "iteration %d: %s; stopping before the optimizer step so the parameters stay as they "
          "were%s",
          iteration + 1, nonfinite,
          skip ? absl::StrFormat(" (more than training.nonfinite_max_consecutive_skips = %d "
                                 "steps in a row were skipped)",
                                 train.nonfinite_max_consecutive_skips)
               : std::string(" (training.nonfinite: skip would skip the step instead)"))));
    }
  } else {
    consecutive_skips_ = 0;
    update_expert_bias(expert_counts);
    data_parallel_->clip(grad_norm, recipe_.optimizer.clip_grad);
    watchdog::set_position(iteration + 1, "optimizer step");
    data_parallel_->step(lr);  // sharded; parameters gathered back (overlapped)
  }

  IterationMetrics m;
  m.iteration = iteration + 1;
  m.train_iters = recipe_.training.train_iters;
  m.lm_loss = losses[0];
  m.aux_loss = losses[1];
  m.z_loss = losses[2];
  m.grad_norm = grad_norm;
  m.lr = lr;
  m.skipped = !nonfinite.empty();
  m.skipped_reason = nonfinite;
  const int64_t sequences = recipe_.training.global_batch_size;
  m.tokens = sequences * recipe_.model.seq_length;
  m.model_flops = model_flops(sequences);
  m.peak_flops = peak_flops_;
  m.peak_memory_bytes = MemoryStats::peak_bytes();
  m.dp_wait_seconds = data_parallel_->grad_reduce_wait_seconds() +
                      data_parallel_->param_gather_wait_seconds() - dp_wait_before;
  if (ctx_.coords.pp_size > 1) m.pipeline_idle_fraction = pipeline_->last_times().idle_fraction();
  if (fssdp && expert_slots > 0) {
    m.fssdp_gathered_fraction = double(experts_gathered) / expert_slots;
    m.fssdp_blocked_seconds = fssdp->blocked_seconds - blocked_before;
  }
  const std::vector<float> bias_range = expert_bias_ranges(num_moe_layers);
  int moe_index = 0;
  for (int layer = 0; layer < recipe_.model.num_layers; ++layer) {
    if (!recipe_.model.is_moe_layer(layer)) continue;
    MoeLoadSummary s;
    s.layer = layer;
    s.tokens_per_expert = expert_counts[moe_index];
    s.dropped_fraction =
        assignments[moe_index] > 0 ? double(dropped[moe_index]) / assignments[moe_index] : 0;
    if (!bias_range.empty()) {
      s.bias_min = -bias_range[2 * moe_index];
      s.bias_max = bias_range[2 * moe_index + 1];
    }
    m.moe.push_back(std::move(s));
    ++moe_index;
  }
  fill_placement_summaries(std::span<const int64_t>(counts).subspan(placement_first),
                           ctx_.tp_cp_dp->size(), m.moe);
  m.step_seconds = seconds_since(start);
  if (!mfu_warned_) {
    const std::string warning = implausible_mfu_warning(m.mfu(), peak_);
    if (!warning.empty()) metrics_->print(warning);
    mfu_warned_ = !warning.empty();
  }
  return m;
}

// The first parameter (model order, lowest rank first) whose gradient holds a NaN or Inf, named
// by category: the router, a layer's weight, or another tensor. Collective over ctx.world.
std::string Trainer::first_nonfinite_gradient() const {
  std::string name;
  for (const Parameter* p : model_->parameters()) {
    const std::vector<float> g = p->grad.to_vector();  // on the host, wherever it lives
    if (std::any_of(g.begin(), g.end(), [](float x) { return !std::isfinite(x); })) {
      name = p->name();
      break;
    }
  }
  Communicator& world = *ctx_.world;
  int64_t mark = name.empty() ? -1 : world.size() - 1 - world.rank();  // lowest rank wins
  world.all_reduce(std::span<int64_t>(&mark, 1), ReduceOp::kMax);
  if (mark < 0) return "the gradient norm is not finite (no gradient element is: overflow)";
  const int root = world.size() - 1 - static_cast<int>(mark);
  int64_t length = static_cast<int64_t>(name.size());
  world.broadcast(std::span<int64_t>(&length, 1), root);
  name.resize(static_cast<size_t>(length));
  world.broadcast(name.data(), length, CommDType::kUInt8, root);
  std::string category = "a gradient";
  int layer = -1;
  if (name.find("router") != std::string::npos) {
    category = "the router's gradient";
  } else if (std::sscanf(name.c_str(), "layers/%d/", &layer) == 1) {
    category = absl::StrFormat("layer %d's gradient", layer);
  }
  return absl::StrFormat("%s is not finite (first in %s, on rank %d)", category, name, root);
}

// MODEL.md "Global loss": the LM term is normalised by the loss-mask count of the whole global
// batch (every micro-batch of every data-parallel rank), the MoE terms by the micro-batch count.
LossScales Trainer::loss_scales(const std::vector<TokenBatch>& batches) const {
  double mask_sum = 0;
  for (const TokenBatch& b : batches)
    for (float m : b.loss_mask) mask_sum += m;
  ctx_.dp_cp->all_reduce(std::span<double>(&mask_sum, 1));
  mask_sum /= ctx_.coords.cp_size;  // every CP rank counted the whole micro-batches (exact)
  LossScales scales;
  scales.lm = mask_sum > 0 ? 1.0 / mask_sum : 0.0;
  scales.aux = 1.0 / (double(batches.size()) * ctx_.dp->size());
  return scales;
}

// Per MoE layer (−min, max) of its expert bias, from whichever pipeline stage holds the layer;
// empty when the expert bias is off.
std::vector<float> Trainer::expert_bias_ranges(int num_moe_layers) const {
  if (!recipe_.model.moe.moe_router_enable_expert_bias) return {};
  std::vector<float> range(2 * num_moe_layers, -std::numeric_limits<float>::infinity());
  // This pipeline stage's biases, read back with one wait.
  std::vector<Tensor> biases;
  std::vector<int> index;
  for (const auto& layer : model_->layers()) {
    if (!layer->is_moe()) continue;
    biases.push_back(layer->moe()->router().expert_bias()->value);
    index.push_back(moe_layer_index(recipe_.model, layer->layer()));
  }
  const std::vector<float> b = ops::to_host_together(biases);
  for (size_t i = 0; i < index.size(); ++i) {
    const int64_t E = biases[i].numel();
    const auto first = b.begin() + static_cast<int64_t>(i) * E, last = first + E;
    range[2 * index[i]] = -*std::min_element(first, last);
    range[2 * index[i] + 1] = *std::max_element(first, last);
  }
  ctx_.pp->all_reduce(std::span<float>(range), ReduceOp::kMax);
  return range;
}

// MODEL.md "Aux-loss-free balancing", once per step from the global batch's counts.
void Trainer::update_expert_bias(const std::vector<std::vector<int64_t>>& global_counts) {
  for (const auto& layer : model_->layers()) {  // this pipeline stage's layers
    if (!layer->is_moe() || layer->moe()->router().expert_bias() == nullptr) continue;
    // The step is decided on the host and added on the bias's device: no read back.
    const Tensor& bias = layer->moe()->router().expert_bias()->value;
    std::vector<float> step(bias.numel(), 0.0f);
    moefold::update_expert_bias(global_counts[moe_layer_index(recipe_.model, layer->layer())],
                                recipe_.model.moe.moe_router_bias_update_rate, step.data());
    ops::add(bias, ops::to_device(Tensor::from_vector({bias.numel()}, step), bias.device()));
  }
}

// Forward + backward model FLOPs: 6 per active parameter per token, plus causal attention's
// 12·L·S²·nh·d/2 per sequence.
double Trainer::model_flops(int64_t sequences) const {
  const ModelConfig& c = recipe_.model;
  const double tokens = double(sequences) * c.seq_length;
  const double attention = 6.0 * c.num_layers * double(c.seq_length) * c.seq_length *
                           c.num_attention_heads * c.head_dim() * sequences;
  return 6.0 * double(active_parameters_) * tokens + attention;
}

absl::StatusOr<EvalResult> Trainer::evaluate(int global_batches) {
  watchdog::set_position(start_iteration_, "evaluation");
  model_->mark_parameters_changed();
  EvalResult result;
  const BatchIteratorOptions options = batch_options();
  // Every rank sees the same sizes, so every rank returns the same error.
  const int64_t samples = valid_data_ ? valid_data_->size() : 0;
  if (global_batches <= 0 || samples < options.global_batch_size) {
    return mark_agreed(absl::FailedPreconditionError(absl::StrFormat(
        "%s: nothing to evaluate: the validation split has %d samples, less than one global "
        "batch of %d, or training.eval_iters is %d (data.split \"%s\" must give the validation "
        "split a weight, and eval_iters must be at least 1)",
        recipe_.source, samples, options.global_batch_size, global_batches, recipe_.data.split)));
  }
  auto iterator = BatchIterator::create(valid_data_, options, 0);
  if (!iterator.ok()) return iterator.status();
  std::vector<double> sums = {0, 0};  // Σ CE·mask, Σ mask
  for (int i = 0; i < global_batches; ++i) {
    if (iterator->consumed_samples() + options.global_batch_size > samples) break;
    auto batches = model_inputs(iterator->next_global_batch());
    if (!batches.ok()) return batches.status();
    const std::vector<MicroBatchStats> forwards =
        pipeline_->run(PipelineScheduleKind::kForwardOnly, *batches, nullptr);
    for (double sum : lm_loss_sums(forwards)) sums[0] += sum;  // zeros but on the last stage
    for (const MicroBatchStats& stats : forwards) sums[1] += stats.loss_mask_sum;
  }
  ctx_.dp_cp->all_reduce(std::span<double>(sums));
  ctx_.pp->all_reduce(std::span<double>(sums));
  result.loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
  result.tokens = static_cast<int64_t>(sums[1]);
  return result;
}

}  // namespace moefold
