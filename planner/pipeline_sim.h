// The makespan of one step's pipeline schedule: every stage runs its action list from
// parallel/pipeline_schedule.h (the one the trainer executes) with the planner's per-chunk costs;
// a forward waits for the previous virtual stage's output, a backward for the next one's
// gradient, each after a point-to-point transfer. The idle time this leaves is the bubble of the
// configured schedule (1F1B, interleaved, zero-bubble), with unequal stages as they are.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "planner/workload.h"

namespace moefold {

struct ChunkCost {
  double forward = 0, backward_input = 0, backward_weight = 0;  // seconds
};

// costs[stage][chunk]; start[stage]: when the stage may begin (its parameters gathered);
// p2p_seconds: one activation or gradient transfer between stages. Returns each stage's finish.
absl::StatusOr<std::vector<double>> simulate_pipeline(
    const Workload& w, const std::vector<std::vector<ChunkCost>>& costs,
    const std::vector<double>& start, double p2p_seconds);

}  // namespace moefold
