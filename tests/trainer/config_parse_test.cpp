// Good recipes parse into the right structs: every section, both moe_layer_freq forms, data_path
// forms, enums and --set overrides.
#include "trainer/config_parse.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moefold {
namespace {

using ::testing::ElementsAre;

Recipe parse_ok(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<Recipe> recipe = parse_recipe_string(yaml, "test.yaml", overrides);
  EXPECT_TRUE(recipe.ok()) << recipe.status().message();
  return recipe.ok() ? *recipe : Recipe{};
}

TEST(ConfigParse, OmittedKeysKeepStructDefaults) {
  const Recipe recipe = parse_ok("data:\n  corpus: sotu\n");
  const Recipe defaults;
  EXPECT_EQ(recipe.model.num_layers, defaults.model.num_layers);
  EXPECT_EQ(recipe.model.hidden_size, defaults.model.hidden_size);
  EXPECT_EQ(recipe.model.moe.num_experts, 0);
  EXPECT_EQ(recipe.parallel.order, "tp-cp-ep-dp-pp");
  EXPECT_EQ(recipe.training.train_iters, defaults.training.train_iters);
  EXPECT_FLOAT_EQ(recipe.optimizer.lr, defaults.optimizer.lr);
  EXPECT_EQ(recipe.optimizer.lr_decay_style, LrDecayStyle::kCosine);
  EXPECT_EQ(recipe.data.corpus, "sotu");
  EXPECT_EQ(recipe.source, "test.yaml");
  EXPECT_EQ(recipe.key_locations.at("data.corpus"), "test.yaml:2");
  EXPECT_EQ(recipe.key_locations.count("model.num_layers"), 0u);
}

TEST(ConfigParse, DemoRecipeFillsEverySection) {
  const std::string path = std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml";
  absl::StatusOr<Recipe> loaded = load_recipe(path, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  const Recipe& r = *loaded;
  EXPECT_EQ(r.source, path);
  EXPECT_EQ(r.model.num_layers, 4);
  EXPECT_EQ(r.model.hidden_size, 256);
  EXPECT_EQ(r.model.num_attention_heads, 4);
  EXPECT_EQ(r.model.kv_heads(), 2);
  EXPECT_EQ(r.model.ffn_hidden_size, 1024);
  EXPECT_EQ(r.model.vocab_size, 0);
  EXPECT_EQ(r.model.seq_length, 256);
  EXPECT_EQ(r.model.moe.num_experts, 8);
  EXPECT_EQ(r.model.moe.moe_ffn_hidden_size, 256);
  EXPECT_EQ(r.model.moe.moe_router_topk, 2);
  EXPECT_EQ(r.model.moe.moe_layer_freq, 0);
  EXPECT_THAT(r.model.moe.moe_layer_pattern, ElementsAre(0, 1, 1, 1));
  EXPECT_FALSE(r.model.is_moe_layer(0));
  EXPECT_TRUE(r.model.is_moe_layer(3));
  EXPECT_EQ(r.model.moe.moe_shared_expert_intermediate_size, 256);
  EXPECT_FLOAT_EQ(r.model.moe.moe_aux_loss_coeff, 1e-2f);
  EXPECT_EQ(r.training.micro_batch_size, 4);
  EXPECT_EQ(r.training.global_batch_size, 16);
  EXPECT_EQ(r.training.eval_interval, 50);
  EXPECT_EQ(r.training.eval_iters, 4);
  EXPECT_FLOAT_EQ(r.optimizer.lr, 1e-3f);
  EXPECT_FLOAT_EQ(r.optimizer.min_lr, 1e-4f);
  EXPECT_EQ(r.optimizer.lr_warmup_iters, 20);
  EXPECT_EQ(r.data.corpus, "sotu");
  EXPECT_EQ(r.data.tokenizer_type, "gpt2");
  EXPECT_EQ(r.logging.run_dir, "runs/demo");
  EXPECT_EQ(r.checkpoint.save, "runs/demo/checkpoints");
  EXPECT_EQ(r.checkpoint.save_interval, 50);
  EXPECT_EQ(r.key_locations.at("model.hidden_size"), path + ":7");
}

TEST(ConfigParse, LoadsFileAndRecordsLines) {
  const std::string path = std::string(MOEFOLD_SOURCE_DIR) + "/tests/trainer/testdata/tiny.yaml";
  absl::StatusOr<Recipe> recipe = load_recipe(path, {"training.train_iters=7"});
  ASSERT_TRUE(recipe.ok()) << recipe.status().message();
  EXPECT_EQ(recipe->model.hidden_size, 32);
  EXPECT_EQ(recipe->model.moe.num_experts, 4);
  EXPECT_THAT(recipe->data.data_path, ElementsAre("/tmp/tiny_text_document"));
  EXPECT_EQ(recipe->training.train_iters, 7);
  EXPECT_EQ(recipe->key_locations.at("moe.num_experts"), path + ":7");
  EXPECT_EQ(recipe->key_locations.at("training.train_iters"), "--set training.train_iters=7");
}

TEST(ConfigParse, MoeLayerFreqIntegerMarksEveryNthLayerFromZero) {
  const std::string moe = "data: {corpus: sotu}\nmoe: {num_experts: 4, moe_ffn_hidden_size: 8";
  EXPECT_THAT(parse_ok("model: {num_layers: 6}\n" + moe + ", moe_layer_freq: 2}\n")
                  .model.moe.moe_layer_pattern,
              ElementsAre(1, 0, 1, 0, 1, 0));
  EXPECT_THAT(parse_ok("model: {num_layers: 3}\n" + moe + "}\n").model.moe.moe_layer_pattern,
              ElementsAre(1, 1, 1));
  EXPECT_THAT(parse_ok("model: {num_layers: 4}\n" + moe + ", moe_layer_freq: 4}\n")
                  .model.moe.moe_layer_pattern,
              ElementsAre(1, 0, 0, 0));
}

TEST(ConfigParse, MoeLayerFreqListIsTakenAsIs) {
  const Recipe recipe = parse_ok(
      "model: {num_layers: 5}\n"
      "moe:\n  num_experts: 4\n  moe_ffn_hidden_size: 8\n  moe_layer_freq: [0, 1, 0, 1, 1]\n"
      "data: {corpus: sotu}\n");
  EXPECT_EQ(recipe.model.moe.moe_layer_freq, 0);
  EXPECT_THAT(recipe.model.moe.moe_layer_pattern, ElementsAre(0, 1, 0, 1, 1));
  EXPECT_TRUE(recipe.model.is_moe_layer(1));
  EXPECT_FALSE(recipe.model.is_moe_layer(2));
}

TEST(ConfigParse, MoeLayerFreqIntegerFollowsOverriddenNumLayers) {
  const Recipe recipe = parse_ok(
      "model: {num_layers: 2}\nmoe: {num_experts: 2, moe_ffn_hidden_size: 8, moe_layer_freq: 2}\n"
      "data: {corpus: sotu}\n",
      {"model.num_layers=6"});
  EXPECT_THAT(recipe.model.moe.moe_layer_pattern, ElementsAre(1, 0, 1, 0, 1, 0));
}

TEST(ConfigParse, OverridesApplyInOrderWithTheirOwnTypes) {
  const Recipe recipe = parse_ok(
      "model: {num_layers: 4}\nmoe: {num_experts: 4, moe_ffn_hidden_size: 8}\n"
      "training: {train_iters: 10}\ndata: {corpus: sotu}\n",
      {"training.train_iters=100", "training.train_iters=200", "optimizer.lr=0.01",
       "moe.moe_layer_freq=[0,1,1,1]", "moe.moe_router_score_function=sigmoid",
       "moe.moe_router_enable_expert_bias=true", "data.data_path=0.5 a 0.5 b",
       "logging.run_dir=runs/x", "training.seed=18446744073709551615"});
  EXPECT_EQ(recipe.training.train_iters, 200);
  EXPECT_FLOAT_EQ(recipe.optimizer.lr, 0.01f);
  EXPECT_THAT(recipe.model.moe.moe_layer_pattern, ElementsAre(0, 1, 1, 1));
  EXPECT_EQ(recipe.model.moe.moe_router_score_function, RouterScoreFunction::kSigmoid);
  EXPECT_TRUE(recipe.model.moe.moe_router_enable_expert_bias);
  EXPECT_THAT(recipe.data.data_path, ElementsAre("0.5", "a", "0.5", "b"));
  EXPECT_EQ(recipe.logging.run_dir, "runs/x");
  EXPECT_EQ(recipe.training.seed, 18446744073709551615ull);
  EXPECT_EQ(recipe.key_locations.at("training.train_iters"), "--set training.train_iters=200");
}

TEST(ConfigParse, DataPathAsPrefixBlendStringOrList) {
  EXPECT_THAT(parse_ok("data: {data_path: /d/web_text_document}\n").data.data_path,
              ElementsAre("/d/web_text_document"));
  EXPECT_THAT(parse_ok("data: {data_path: \"0.8 a  0.2 b\"}\n").data.data_path,
              ElementsAre("0.8", "a", "0.2", "b"));
  EXPECT_THAT(parse_ok("data:\n  data_path: [0.8, a, 0.2, b]\n").data.data_path,
              ElementsAre("0.8", "a", "0.2", "b"));
  EXPECT_EQ(parse_ok("data: {corpus: sotu, split: 98/2/0}\n").data.split, "98/2/0");
}

TEST(ConfigParse, EveryEnumSpelling) {
  const Recipe recipe = parse_ok(
      "moe:\n  num_experts: 8\n  moe_ffn_hidden_size: 8\n  moe_router_score_function: sigmoid\n"
      "  moe_router_load_balancing_type: seq_aux_loss\n  moe_token_drop_policy: position\n"
      "  moe_expert_capacity_factor: 1.25\n  moe_router_num_groups: 4\n"
      "  moe_router_group_topk: 2\n"
      "optimizer: {lr_decay_style: linear}\ndata: {corpus: sotu, tokenizer_type: byte}\n");
  const MoeConfig& moe = recipe.model.moe;
  EXPECT_EQ(moe.moe_router_score_function, RouterScoreFunction::kSigmoid);
  EXPECT_EQ(moe.moe_router_load_balancing_type, LoadBalancingType::kSeqAuxLoss);
  EXPECT_EQ(moe.moe_token_drop_policy, TokenDropPolicy::kPosition);
  EXPECT_FLOAT_EQ(moe.moe_expert_capacity_factor, 1.25f);
  EXPECT_EQ(moe.moe_router_num_groups, 4);
  EXPECT_EQ(recipe.optimizer.lr_decay_style, LrDecayStyle::kLinear);
  EXPECT_EQ(recipe.data.tokenizer_type, "byte");
  EXPECT_EQ(parse_ok("moe: {moe_router_load_balancing_type: none}\noptimizer: "
                     "{lr_decay_style: constant}\ndata: {corpus: sotu}\n")
                .model.moe.moe_router_load_balancing_type,
            LoadBalancingType::kNone);
}

TEST(ConfigParse, EmptySectionsAndBooleansInAnyCase) {
  const Recipe recipe = parse_ok(
      "model:\nparallel:\n  sequence_parallel: True\n  use_distributed_optimizer: TRUE\n"
      "  overlap_param_gather: true\ndata: {corpus: sotu}\n");
  EXPECT_TRUE(recipe.parallel.sequence_parallel);
  EXPECT_TRUE(recipe.parallel.overlap_param_gather);
}

}  // namespace
}  // namespace moefold
