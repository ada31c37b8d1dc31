// The placement metrics of load-driven FSSDP (parallel.fssdp_spare_slots > 0; MoePlacementSummary):
// per MoE layer, each rank's counters of its ExpertReplicas, laid out so that one sum over the
// ranks of a pipeline stage (tp_cp_dp) and over the pipeline gives every rank's figures.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"
#include "trainer/metrics.h"

namespace moefold {

// Zeroes the counters of this stage's MoE layers (at the start of a step).
void reset_placement_stats(const Model& model);

// Per MoE layer of the whole model, in order: rows its owned experts were routed per rank
// (ranks entries), rows its materialised experts computed per rank (ranks), replicas, bytes sent
// by the gathers, bytes sent by the gradient reductions. This rank fills its own entries for
// the layers of its stage; everything else is 0, ready to be summed. The same length on every
// rank (call it on all ranks when parallel.fssdp_spare_slots > 0).
std::vector<int64_t> placement_counts(const Model& model, const ModelConfig& config, int rank,
                                      int ranks);

// Sets each summary's placement from the summed counts (one summary per MoE layer).
void fill_placement_summaries(std::span<const int64_t> counts, int ranks,
                              std::vector<MoeLoadSummary>& moe);

}  // namespace moefold
