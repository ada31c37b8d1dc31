// The trainer: builds the model, optimizer and data for a recipe on this rank's ParallelContext
// and runs the training loop of DESIGN.md ("The step, top to bottom"), with evaluation and
// metrics around the step, not inside it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch_iterator.h"
#include "data/tokenizer.h"
#include "model/model.h"
#include "parallel/context.h"
#include "trainer/data_parallel.h"
#include "trainer/metrics.h"
#include "trainer/peak_flops.h"
#include "trainer/pipeline_executor.h"
#include "trainer/train_config.h"

namespace moefold {

struct EvalResult {
  double loss = 0;      // Σ CE·mask / Σ mask over every evaluated token of every rank
  int64_t tokens = 0;   // tokens with loss_mask = 1
};

class Trainer {
 public:
  // Checks that the recipe's layout is one this build can train, opens the tokenizer and data,
  // builds and initialises the model. Collective over ctx.world.
  static absl::StatusOr<std::unique_ptr<Trainer>> create(const Recipe& recipe,
                                                         const ParallelContext& ctx);

  // Restores model, optimizer (unless `model_only`), expert biases and the data position from a
  // checkpoint directory (or its `latest`), written under any layout. Collective.
  absl::Status load_checkpoint(const std::string& path, bool model_only = false);
  // Writes checkpoint.save/iter_<n> after `iterations_done` steps. Collective.
  absl::Status save_checkpoint(int iterations_done);

  // From the loaded iteration to train_iters, evaluating and saving as asked. Stops early, after
  // saving a checkpoint (when checkpoint.save is set), at the first step boundary where any rank
  // saw a stop signal or training.exit_duration_in_mins has passed; stop_reason() then says why.
  absl::Status train();
  // A signal number that asks training to stop (set from a signal handler, 0 = none); the
  // trainer polls it at step boundaries and agrees with every rank. May be null.
  void set_stop_signal(const std::atomic<int>* signal) { stop_signal_ = signal; }
  // Why train() stopped before train_iters ("SIGTERM", "training.exit_duration_in_mins"); empty
  // when it did not.
  const std::string& stop_reason() const { return stop_reason_; }
  absl::StatusOr<IterationMetrics> train_step(int iteration);  // one optimizer step (0-based)
  absl::StatusOr<EvalResult> evaluate(int global_batches);     // on the validation split

  Model& model() { return *model_; }
  DataParallelState& data_parallel() { return *data_parallel_; }
  PipelineExecutor& pipeline() { return *pipeline_; }
  const Recipe& recipe() const { return recipe_; }

 private:
  Trainer(const Recipe& recipe, const ParallelContext& ctx) : recipe_(recipe), ctx_(ctx) {}
  absl::Status setup();
  LossScales loss_scales(const std::vector<TokenBatch>& batches) const;
  void update_expert_bias(const std::vector<std::vector<int64_t>>& global_counts);
  std::vector<float> expert_bias_ranges(int num_moe_layers) const;
  double model_flops(int64_t sequences) const;
  // Whether any rank asks to stop now, agreed by all (collective); sets stop_reason_.
  bool agreed_stop(double training_seconds);
  std::string first_nonfinite_gradient() const;  // collective

  BatchIteratorOptions batch_options() const;
  absl::Status build_train_batches(int64_t consumed_samples);

  Recipe recipe_;
  ParallelContext ctx_;
  int start_iteration_ = 0;  // steps already taken (resumed runs)
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Model> model_;
  // Gradient buckets, norm, clipping and the (distributed) optimizer; after model_, so it goes
  // first.
  std::unique_ptr<DataParallelState> data_parallel_;
  std::shared_ptr<const SampleDataset> train_data_;
  std::unique_ptr<BatchIterator> train_batches_;
  std::shared_ptr<const SampleDataset> valid_data_;
  std::unique_ptr<PipelineExecutor> pipeline_;  // runs each step's schedule on this stage
  int64_t active_parameters_ = 0;               // of the whole model, over all pipeline stages
  std::unique_ptr<MetricsLogger> metrics_;
  PeakFlops peak_;         // per rank, and where it comes from
  double peak_flops_ = 0;  // summed over all ranks
  bool mfu_warned_ = false;
  const std::atomic<int>* stop_signal_ = nullptr;
  std::string stop_reason_;
  int consecutive_skips_ = 0;  // steps skipped in a row (training.nonfinite: skip)
};

}  // namespace moefold
