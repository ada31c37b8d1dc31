// `moefold plan`: memory and step time of one layout of a recipe on a cluster.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "planner/cluster.h"
#include "planner/memory_model.h"
#include "planner/time_model.h"
#include "planner/workload.h"

namespace moefold {

struct PlanOptions {
  double routing_imbalance = 1;  // max/mean tokens per EP rank (1 = perfectly balanced)
};

struct Plan {
  Workload workload;
  std::string cluster_name;
  MemoryBreakdown memory;      // the stage needing the most memory
  std::vector<double> memory_by_stage;  // total bytes per rank of each pipeline stage
  double activations_with_full_recompute = 0;  // the same stage's activations under recompute
  double memory_capacity = 0;  // the cluster's usable bytes per rank
  GroupSpans spans;            // the communication groups' sizes and the nodes they span
  bool fits = false;
  int time_stage = 0;          // the busiest pipeline stage, whose breakdown is shown
  TimeParts compute;           // per step on that stage: compute and exposed in-layer comm
  double bubble_seconds = 0;   // pipeline idle time of that stage (incl. p2p waits)
  double dp_seconds = 0;       // exposed data-parallel reductions and gathers
  double optimizer_seconds = 0;
  double step_seconds = 0;
  double model_flops = 0;      // per step, as the trainer counts them
  double mfu = 0;
  double tokens_per_s_per_gpu = 0;
};

absl::StatusOr<Plan> make_plan(const Recipe& recipe, const ClusterSpec& cluster, int world,
                               const PlanOptions& options);
// The same for an already derived workload (the layout search builds many).
absl::StatusOr<Plan> plan_workload(const Workload& workload, const ClusterSpec& cluster);

std::string format_plan_text(const Plan& plan);
// One JSON object: mfu, tokens_per_s_per_gpu, memory_bytes_per_gpu, step_seconds, fits, and the
// breakdowns.
std::string format_plan_json(const Plan& plan);

// "TP2 CP1 PP8 VPP1 DP8 | EP8 ETP1 EDP2 | mb1" for tables.
std::string describe_layout(const Workload& w);

}  // namespace moefold
