// `moefold plan --search`: every valid folding of a recipe for N GPUs — TP, CP, PP (with VPP),
// EP, ETP and the micro-batch size — planned and ranked by predicted throughput among those that
// fit. Everything else (recomputation, overlap, distributed optimizer, schedule flags) stays as
// the recipe says.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "planner/plan.h"

namespace moefold {

struct SearchResult {
  int candidates = 0;      // layouts tried
  int valid = 0;           // accepted by the recipe checks
  std::vector<Plan> fits;  // the valid layouts that fit, best tokens/s first
};

// TP and ETP stay within a node (ranks_per_node), where their per-layer collectives belong.
absl::StatusOr<SearchResult> search_layouts(const Recipe& recipe, const ClusterSpec& cluster,
                                            int gpus, const PlanOptions& options);

std::string format_search_table(const SearchResult& result, int top);

}  // namespace moefold
