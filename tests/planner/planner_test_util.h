// Recipes and clusters for the planner tests.
#pragma once

#include <string>
#include <vector>

#include "planner/cluster.h"
#include "trainer/config_parse.h"

namespace moefold::testing {

inline const std::string kSourceDir = MOEFOLD_SOURCE_DIR;

// A small MoE recipe (vocabulary given, so no tokenizer files are needed) with overrides.
inline Recipe small_recipe(const std::vector<std::string>& overrides = {}) {
  const std::string yaml = R"(
model: {num_layers: 4, hidden_size: 64, num_attention_heads: 4, num_query_groups: 2,
        ffn_hidden_size: 128, vocab_size: 512, seq_length: 32}
moe: {num_experts: 4, moe_ffn_hidden_size: 32, moe_router_topk: 2, moe_layer_freq: [0, 1, 1, 1],
      moe_shared_expert_intermediate_size: 32}
training: {micro_batch_size: 2, global_batch_size: 8}
data: {corpus: sotu, tokenizer_type: byte}
)";
  auto recipe = parse_recipe_string(yaml, "small.yaml", overrides);
  if (!recipe.ok()) throw std::runtime_error(std::string(recipe.status().message()));
  return *recipe;
}

inline ClusterSpec cluster_file(const std::string& name) {
  auto cluster = load_cluster(kSourceDir + "/clusters/" + name);
  if (!cluster.ok()) throw std::runtime_error(std::string(cluster.status().message()));
  return *cluster;
}

}  // namespace moefold::testing
