#include "trainer/placement_metrics.h"

#include "tensor/check.h"

namespace moefold {
namespace {

int64_t entries_per_layer(int ranks) { return 2 * static_cast<int64_t>(ranks) + 3; }

}  // namespace

void reset_placement_stats(const Model& model) {
  for (const auto& layer : model.layers())
    if (layer->is_moe() && layer->moe()->replicas()) layer->moe()->replicas()->reset_stats();
}

std::vector<int64_t> placement_counts(const Model& model, const ModelConfig& config, int rank,
                                      int ranks) {
  std::vector<int> moe_index(config.num_layers, -1);  // of each layer among the MoE layers
  int moe_layers = 0;
  for (int l = 0; l < config.num_layers; ++l)
    if (config.is_moe_layer(l)) moe_index[l] = moe_layers++;
  std::vector<int64_t> counts(moe_layers * entries_per_layer(ranks), 0);
  for (const auto& layer : model.layers()) {
    if (!layer->is_moe() || !layer->moe()->replicas()) continue;
    const ReplicaStats& s = layer->moe()->replicas()->stats();
    int64_t* at = counts.data() + moe_index[layer->layer()] * entries_per_layer(ranks);
    at[rank] = s.ep_rows;
    at[ranks + rank] = s.expert_rows;
    at[2 * ranks] = s.replicas_held;
    at[2 * ranks + 1] = s.gather_bytes;
    at[2 * ranks + 2] = s.reduce_bytes;
  }
  return counts;
}

void fill_placement_summaries(std::span<const int64_t> counts, int ranks,
                              std::vector<MoeLoadSummary>& moe) {
  if (counts.empty()) return;  // no load-driven FSSDP
  MOEFOLD_CHECK(counts.size() == moe.size() * entries_per_layer(ranks));
  for (size_t l = 0; l < moe.size(); ++l) {
    const int64_t* at = counts.data() + l * entries_per_layer(ranks);
    MoePlacementSummary& p = moe[l].placement;
    p.present = true;
    p.ep_rows_per_rank.assign(at, at + ranks);
    p.rows_per_rank.assign(at + ranks, at + 2 * ranks);
    p.replicas = at[2 * ranks];
    p.gathered_bytes = at[2 * ranks + 1];
    p.reduced_bytes = at[2 * ranks + 2];
  }
}

}  // namespace moefold
