// Routing skew: max/mean tokens per EP rank, from a run's metrics.jsonl (trainer/metrics.cpp
// writes each MoE layer's "tokens_per_expert" per iteration). The run may have used another
// layout: the experts are grouped into the planned EP ranks (E/EP consecutive experts each).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moefold {

// The mean over training iterations and MoE layers of (max over EP ranks of the rank's tokens)
// / (mean over EP ranks). Errors name the file and line.
absl::StatusOr<double> routing_imbalance_from_metrics(const std::string& path, int num_experts,
                                                      int expert_parallel_size);

}  // namespace moefold
