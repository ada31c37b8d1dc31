// One recipe under one layout, as the planner sees it: the parallel sizes, the pipeline split,
// and the per-rank shapes of one micro-batch. Pure functions of the recipe; the same checks as
// `moefold train` refuse impossible layouts.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "model/stage_partition.h"
#include "parallel/pipeline_schedule.h"
#include "trainer/train_config.h"

namespace moefold {

struct Workload {
  ModelConfig model;        // vocabulary filled in
  ParallelConfig parallel;
  TrainingConfig training;  // global_batch_size filled in
  int world = 1;
  int tp = 1, cp = 1, pp = 1, dp = 1;  // attention side
  int ep = 1, etp = 1, edp = 1;        // expert side
  int chunks = 1;                      // model chunks per pipeline rank (V)
  int micro_batches = 1;               // per data-parallel rank and step (M)
  PipelineScheduleKind schedule = PipelineScheduleKind::kOneForwardOneBackward;
  StagePartition partition{1, 1, {LayerRange{0, 1}}};
  // Max/mean routed rows over the EP ranks, as the step sees it: the given imbalance, capped by
  // the capacity factor when tokens are dropped.
  double imbalance = 1;

  bool sequence_parallel() const { return parallel.sequence_parallel && tp > 1; }
  // Tokens of one micro-batch on this rank's CP shard (N): every TP rank's attention sees them.
  double tokens() const;
  double residual_rows() const;  // n: N/TP under sequence parallelism, else N
  double routed_rows() const;    // rows this rank routes: N/TP when TP > 1, else N
  // Rows the busiest rank's experts compute in one MoE layer (Re): each routed assignment goes to
  // all ETP ranks of its expert, so the mean is routed_rows·k·ETP; the straggler's is imbalance×.
  double expert_rows() const;
  double mean_expert_rows() const;
  int local_experts() const { return model.moe.num_experts / ep; }
};

// Fills model.vocab_size from the recipe's tokenizer when it is 0, as the trainer does.
absl::Status resolve_vocabulary(Recipe& recipe);

// Validates the recipe for `world` ranks exactly as `moefold train` does (a vocabulary of 0 is
// taken from the recipe's tokenizer first) and derives the workload.
absl::StatusOr<Workload> make_workload(const Recipe& recipe, int world, double imbalance);

// Trainable parameters of the whole model, and the ones a token passes through (the count the
// trainer's MFU uses: Model::active_parameter_count).
double total_parameters(const ModelConfig& model);
double active_parameters(const ModelConfig& model);

// Model FLOPs of one step, forward + backward, as trainer/trainer.cpp counts them for MFU:
// 6 per active parameter per token plus causal attention's 6·L·S²·H per sequence.
double model_flops_per_step(const ModelConfig& model, int64_t sequences);

}  // namespace moefold
