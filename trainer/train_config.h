// The `training`, `checkpoint` and `logging` sections of a recipe, and the whole recipe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "data/data_config.h"
#include "model/model_config.h"
#include "optim/optim_config.h"
#include "parallel/parallel_config.h"

namespace moefold {

// Megatron's --recompute-granularity: full re-runs each transformer layer's forward in backward
// (Model::set_recompute_activations); selective (the attention core only) is refused: the
// attention here keeps no (S,S) scores, so there is nothing for it to drop.
enum class RecomputeGranularity { kNone, kFull, kSelective };

// Where a rank computes: one process per device (DESIGN.md).
enum class TrainingDevice { kCpu, kCuda };
// What a step with a non-finite loss or gradient does: stop the run (naming the first non-finite
// tensor), or skip the optimizer step (parameters, optimizer state and expert biases unchanged;
// the batch counts as consumed) up to nonfinite_max_consecutive_skips steps in a row.
enum class NonfinitePolicy { kStop, kSkip };

struct TrainingConfig {
  int micro_batch_size = 1;
  int global_batch_size = 0;   // 0 = micro_batch_size × data-parallel size
  int train_iters = 100;
  int eval_interval = 0;       // 0 = no evaluation during training
  int eval_iters = 10;
  uint64_t seed = 1234;
  int blas_threads = 1;        // BLAS threads per rank
  double peak_flops = 0;       // per rank, for MFU; 0 = measure sgemm at start-up
  RecomputeGranularity recompute_granularity = RecomputeGranularity::kNone;
  TrainingDevice device = TrainingDevice::kCpu;
  bool share_devices = false;  // cuda: ranks of a node may share a GPU (more ranks than GPUs)
  bool bf16 = false;           // Megatron's --bf16: MODEL.md "Mixed precision"
  // Stop (saving a checkpoint when checkpoint.save is set) at the first step boundary after this
  // many minutes of training; Megatron's --exit-duration-in-mins. 0 = no limit.
  double exit_duration_in_mins = 0;
  NonfinitePolicy nonfinite = NonfinitePolicy::kStop;
  int nonfinite_max_consecutive_skips = 5;
};

struct CheckpointConfig {
  std::string save;            // directory; empty = never save
  int save_interval = 0;
  int keep_last = 0;           // 0 = keep all
  std::string load;            // directory to resume from; empty = start fresh
};

struct LoggingConfig {
  int log_interval = 1;
  std::string metrics_path;    // JSONL; empty = <run_dir>/metrics.jsonl
  std::string run_dir = "runs/default";
  bool all_ranks = false;      // every rank prints, not only rank 0
};

struct Recipe {
  std::string source;          // file the recipe came from, for messages
  // key path ("moe.moe_router_topk") -> where it was set: "file:line" or "--set key=value"
  std::map<std::string, std::string> key_locations;
  ModelConfig model;           // `model` and `moe` sections
  ParallelConfig parallel;
  TrainingConfig training;
  OptimizerConfig optimizer;
  DataConfig data;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
};

}  // namespace moefold
