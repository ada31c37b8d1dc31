// Training metrics: one JSONL record per iteration (and per evaluation) for scaling studies and
// plots, and a console progress line every log_interval iterations.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace moefold {

// Load-driven FSSDP (parallel.fssdp_spare_slots > 0): one MoE layer's expert rows per rank over
// the step, every rank of the pipeline stage, before placement (the rows its owned experts were
// routed: plain EP) and after (the rows its materialised experts computed), and the replicas.
struct MoePlacementSummary {
  bool present = false;
  std::vector<int64_t> ep_rows_per_rank, rows_per_rank;  // indexed by rank in the stage
  int64_t replicas = 0;        // replicas materialised, summed over ranks and micro-batches
  int64_t gathered_bytes = 0;  // sent by the replica gathers (spAG), all ranks
  int64_t reduced_bytes = 0;   // sent by the replica gradient reductions (spRS), all ranks

  double ep_max_over_mean() const;  // max/mean of ep_rows_per_rank
  double max_over_mean() const;     // max/mean of rows_per_rank
};

struct MoeLoadSummary {
  int layer = 0;
  std::vector<int64_t> tokens_per_expert;  // [E] over the whole global batch
  double dropped_fraction = 0;              // of routed assignments, over the global batch
  float bias_min = 0, bias_max = 0;         // expert-bias range (0, 0 when disabled)
  MoePlacementSummary placement;

  double min_load() const;
  double mean_load() const;
  double max_load() const;
  double imbalance() const;  // max / mean
};

struct IterationMetrics {
  int iteration = 0;            // 1-based: the number of optimizer steps taken
  int train_iters = 0;
  double lm_loss = 0, aux_loss = 0, z_loss = 0;
  double grad_norm = 0, lr = 0;
  // training.nonfinite: skip dropped this step's update; `skipped_reason` names what was not
  // finite.
  bool skipped = false;
  std::string skipped_reason;
  int64_t tokens = 0;           // tokens of the global batch
  double step_seconds = 0;
  double model_flops = 0;       // model FLOPs of the global batch (forward + backward)
  double peak_flops = 0;        // summed over all ranks
  int64_t peak_memory_bytes = 0;  // this rank's tensor high-water mark
  // FSSDP: local experts materialised over those that could have been, all ranks and MoE
  // layers of the step (how sparse the gathers were); < 0 without FSSDP.
  double fssdp_gathered_fraction = -1;
  double fssdp_blocked_seconds = 0;  // this rank's waits for FSSDP gathers and reduce-scatters
  // This rank's exposed data-parallel communication: waits for gradient reductions and
  // parameter gathers in this step (what overlap did not hide).
  double dp_wait_seconds = 0;
  double pipeline_idle_fraction = -1;  // this rank's share of the step idle in the pipeline (PP>1)
  std::vector<MoeLoadSummary> moe;

  double tokens_per_second() const { return step_seconds > 0 ? tokens / step_seconds : 0; }
  double tflops() const { return step_seconds > 0 ? model_flops / step_seconds / 1e12 : 0; }
  double mfu() const { return peak_flops > 0 ? model_flops / step_seconds / peak_flops : 0; }
};

class MetricsLogger {
 public:
  // `prints` is false on ranks that do not print (all but rank 0 by default); one rank
  // `writes_file`. Nothing is written until start().
  MetricsLogger(const std::string& jsonl_path, bool prints, bool writes_file, int log_interval);

  // Opens the JSONL file keeping the records of iterations <= keep_through (metrics_file.h):
  // 0 for a fresh run, the checkpoint's iteration for a resume.
  absl::Status start(int64_t keep_through);

  void log_iteration(const IterationMetrics& m);
  void log_evaluation(int iteration, double loss, int64_t tokens);
  void print(const std::string& line);

 private:
  std::string path_;
  bool enabled_;
  bool writes_file_;
  int log_interval_;
  std::ofstream out_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// "[  12/150]   8% |##----------| lm 7.123 aux 0.0120 gnorm 1.23 lr 3.0e-04 | 5123 tok/s ..."
std::string format_progress_line(const IterationMetrics& m, double elapsed_seconds);

}  // namespace moefold
