#include "planner/pipeline_sim.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moefold {

absl::StatusOr<std::vector<double>> simulate_pipeline(
    const Workload& w, const std::vector<std::vector<ChunkCost>>& costs,
    const std::vector<double>& start, double p2p_seconds) {
  const int pp = w.pp, chunks = w.chunks, M = w.micro_batches, stages = pp * chunks;
  const bool deferred_weights = w.schedule == PipelineScheduleKind::kZeroBubble;
  std::vector<std::vector<PipelineAction>> lists(pp);
  for (int s = 0; s < pp; ++s) {
    auto list = build_pipeline_schedule(w.schedule, PipelineScheduleShape{pp, s, M, chunks});
    if (!list.ok()) return list.status();
    for (const PipelineAction& a : *list) {
      if (a.is_compute()) lists[s].push_back(a);
    }
  }
  // Finish times per (virtual stage, micro-batch); < 0 = not yet.
  std::vector<std::vector<double>> forward_done(stages, std::vector<double>(M, -1));
  std::vector<std::vector<double>> backward_done(stages, std::vector<double>(M, -1));
  std::vector<size_t> next(pp, 0);
  std::vector<double> free_at = start;
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < pp; ++s) {
      while (next[s] < lists[s].size()) {
        const PipelineAction& a = lists[s][next[s]];
        const int v = a.chunk * pp + s, mb = a.micro_batch;
        const ChunkCost& cost = costs[s][a.chunk];
        double ready = 0, duration = 0;
        if (a.type == PipelineActionType::kForward) {
          ready = v == 0 ? 0 : forward_done[v - 1][mb];
          if (v > 0 && ready >= 0) ready += p2p_seconds;
          duration = cost.forward;
        } else if (a.type == PipelineActionType::kBackward) {
          ready = v == stages - 1 ? forward_done[v][mb] : backward_done[v + 1][mb];
          if (v < stages - 1 && ready >= 0) ready += p2p_seconds;
          duration = cost.backward_input + (deferred_weights ? 0 : cost.backward_weight);
        } else {
          ready = backward_done[v][mb];
          duration = cost.backward_weight;
        }
        if (ready < 0) break;  // waits for a neighbour
        const double end = std::max(free_at[s], ready) + duration;
        if (a.type == PipelineActionType::kForward) forward_done[v][mb] = end;
        if (a.type == PipelineActionType::kBackward) backward_done[v][mb] = end;
        free_at[s] = end;
        ++next[s];
        progress = true;
      }
    }
  }
  for (int s = 0; s < pp; ++s) {
    if (next[s] < lists[s].size()) {
      return absl::InternalError(absl::StrCat("pipeline simulation: stage ", s, " stalled at ",
                                              describe(lists[s][next[s]])));
    }
  }
  return free_at;
}

}  // namespace moefold
