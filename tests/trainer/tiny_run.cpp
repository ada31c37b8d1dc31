#include "tiny_run.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "data/indexed_dataset.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {

std::string write_tiny_dataset(const std::string& dir, int documents, unsigned seed) {
  std::filesystem::create_directories(dir);
  const std::string prefix = dir + "/tiny_text_document";
  auto builder = IndexedDatasetBuilder::create(prefix, IndexedDType::kUInt16);
  EXPECT_TRUE(builder.ok()) << builder.status();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(5, 60), token(0, 255);
  for (int d = 0; d < documents; ++d) {
    std::vector<int32_t> ids(length(rng));
    for (int32_t& id : ids) id = token(rng);
    ids.push_back(256);  // end of document
    EXPECT_TRUE(builder->add_item(ids).ok());
    builder->end_document();
  }
  EXPECT_TRUE(builder->finalize().ok());
  return prefix;
}

Recipe tiny_recipe(const std::string& data_prefix, const std::string& run_dir,
                   const std::vector<std::string>& overrides) {
  const std::string yaml = R"(
model:
  num_layers: 2
  hidden_size: 32
  num_attention_heads: 4
  num_query_groups: 2
  ffn_hidden_size: 64
  seq_length: 16
moe:
  num_experts: 4
  moe_ffn_hidden_size: 32
  moe_router_topk: 2
  moe_layer_freq: [0, 1]
  moe_aux_loss_coeff: 1.0e-2
  moe_z_loss_coeff: 1.0e-3
  moe_shared_expert_intermediate_size: 32
training:
  micro_batch_size: 2
  global_batch_size: 8
  train_iters: 5
  seed: 7
  peak_flops: 1.0e+11
optimizer:
  lr: 1.0e-2
  min_lr: 1.0e-3
  lr_warmup_iters: 1
  clip_grad: 1.0
data:
  tokenizer_type: byte
  split: "90,10,0"
  data_path: ")" + data_prefix + R"("
logging:
  run_dir: ")" + run_dir + R"("
)";
  auto recipe = parse_recipe_string(yaml, "tiny_recipe", overrides);
  EXPECT_TRUE(recipe.ok()) << recipe.status();
  return *recipe;
}

std::vector<StepRecord> run_steps(const Recipe& recipe, const ParallelContext& ctx, int steps) {
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  std::vector<StepRecord> records;
  if (!trainer.ok()) return records;
  for (int i = 0; i < steps; ++i) {
    auto m = (*trainer)->train_step(i);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) break;
    records.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
  }
  return records;
}

}  // namespace moefold::testing
