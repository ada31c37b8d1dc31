// Bad recipes: each gives one line naming the file (or --set), the line, the key and the reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "trainer/config_parse.h"
#include "trainer/config_validate.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A valid MoE base recipe; tests append or override to break one thing. Lines 1-6.
constexpr const char* kBase =
    "model:\n"                    // 1
    "  num_layers: 4\n"           // 2
    "  hidden_size: 64\n"         // 3
    "  num_attention_heads: 4\n"  // 4
    "data:\n"                     // 5
    "  corpus: sotu\n";           // 6

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<Recipe> recipe = parse_recipe_string(yaml, "x.yaml", overrides);
  EXPECT_FALSE(recipe.ok()) << "expected an error for:\n" << yaml;
  if (recipe.ok()) return "";
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(recipe.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
  return message;
}

std::string moe_error(const std::string& moe_lines,
                      const std::vector<std::string>& overrides = {}) {
  return error_of(
      std::string(kBase) + "moe:\n  num_experts: 8\n  moe_ffn_hidden_size: 32\n" + moe_lines,
      overrides);
}

TEST(ConfigErrors, BaseRecipeIsValid) {
  EXPECT_TRUE(parse_recipe_string(kBase, "x.yaml", {}).ok());
}

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  EXPECT_EQ(error_of("data:\n  corpus: sotu\nmodel:\n  hiden_size: 64\n"),
            "x.yaml:4: model.hiden_size: unknown key (did you mean model.hidden_size?)");
  EXPECT_EQ(error_of(std::string(kBase) + "training:\n  train_iter: 5\n"),
            "x.yaml:8: training.train_iter: unknown key (did you mean training.train_iters?)");
  EXPECT_EQ(error_of(std::string(kBase) + "training:\n  xylophone: 5\n"),
            "x.yaml:8: training.xylophone: unknown key");
}

TEST(ConfigErrors, KeyInTheWrongSectionSuggestsItsSection) {
  EXPECT_EQ(error_of("model:\n  num_experts: 8\n"),
            "x.yaml:2: model.num_experts: unknown key (did you mean moe.num_experts?)");
}

TEST(ConfigErrors, UnknownSection) {
  EXPECT_EQ(error_of(std::string(kBase) + "optimiser:\n  lr: 0.1\n"),
            "x.yaml:7: optimiser: unknown section (did you mean optimizer?)");
  EXPECT_EQ(error_of("num_layers: 4\n"),
            "x.yaml:1: num_layers: unknown section (did you mean model.num_layers?)");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(error_of("model:\n  num_layers: four\n"),
            "x.yaml:2: model.num_layers: expected an integer, got \"four\"");
  EXPECT_EQ(error_of("model:\n  num_layers: 2.5\n"),
            "x.yaml:2: model.num_layers: expected an integer, got \"2.5\"");
  EXPECT_EQ(error_of("model:\n  num_layers: [1, 2]\n"),
            "x.yaml:2: model.num_layers: expected an integer, got a list");
  EXPECT_EQ(error_of("optimizer:\n  lr:\n"),
            "x.yaml:2: optimizer.lr: expected a number, got nothing");
  EXPECT_EQ(error_of("parallel:\n  sequence_parallel: yes\n"),
            "x.yaml:2: parallel.sequence_parallel: expected true or false, got \"yes\"");
  EXPECT_EQ(error_of("logging:\n  run_dir: {a: 1}\n"),
            "x.yaml:2: logging.run_dir: expected a string, got a map");
  EXPECT_EQ(error_of("model: 5\n"), "x.yaml:1: model: expected a map of keys");
  EXPECT_EQ(error_of("- model\n"),
            "x.yaml:1: a recipe is a map of sections (model, moe, parallel, ...)");
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(error_of("model:\n  hidden_size: -5\n"),
            "x.yaml:2: model.hidden_size: -5 is out of range (must be ≥ 1)");
  EXPECT_EQ(error_of("data: {corpus: sotu}\noptimizer:\n  lr: -1e-3\n"),
            "x.yaml:3: optimizer.lr: -1e-3 is out of range (must be ≥ 0)");
  EXPECT_EQ(error_of("optimizer:\n  adam_beta2: 1.5\n"),
            "x.yaml:2: optimizer.adam_beta2: 1.5 is out of range (must be 0 … 1)");
  EXPECT_EQ(error_of("model:\n  num_layers: 3000000000\n"),
            "x.yaml:2: model.num_layers: 3000000000 is out of range (must be ≥ 1)");
  EXPECT_EQ(error_of("moe:\n  moe_layer_freq: 0\n"),
            "x.yaml:2: moe.moe_layer_freq: 0 is out of range (must be ≥ 1)");
}

TEST(ConfigErrors, BadEnumString) {
  EXPECT_EQ(moe_error("  moe_router_score_function: sigmod\n"),
            "x.yaml:10: moe.moe_router_score_function: \"sigmod\" is not one of softmax, sigmoid "
            "(did you mean sigmoid?)");
  EXPECT_EQ(error_of("optimizer:\n  lr_decay_style: exponential\n"),
            "x.yaml:2: optimizer.lr_decay_style: \"exponential\" is not one of cosine, linear, "
            "constant");
  EXPECT_EQ(error_of("data:\n  tokenizer_type: wordpiece\n"),
            "x.yaml:2: data.tokenizer_type: \"wordpiece\" is not one of gpt2, huggingface, "
            "sentencepiece, byte, null");
}

TEST(ConfigErrors, TopkLargerThanExperts) {
  EXPECT_EQ(moe_error("  moe_router_topk: 9\n"),
            "x.yaml:10: moe.moe_router_topk: 9 is larger than moe.num_experts 8");
  // A key left at its default is blamed on the file, without a line.
  EXPECT_EQ(error_of(std::string(kBase) + "moe:\n  num_experts: 1\n  moe_ffn_hidden_size: 32\n"),
            "x.yaml: moe.moe_router_topk: 2 is larger than moe.num_experts 1");
}

TEST(ConfigErrors, AttentionHeadDivisibility) {
  EXPECT_EQ(error_of("data: {corpus: sotu}\nmodel:\n  hidden_size: 66\n  num_attention_heads: 4\n"),
            "x.yaml:3: model.hidden_size: 66 is not divisible by model.num_attention_heads 4 "
            "(set model.kv_channels for another head dim)");
  EXPECT_EQ(
      error_of("data: {corpus: sotu}\nmodel:\n  num_attention_heads: 4\n  num_query_groups: 3\n"),
      "x.yaml:4: model.num_query_groups: model.num_attention_heads 4 is not divisible by 3");
  EXPECT_EQ(error_of("data: {corpus: sotu}\nmodel:\n  hidden_size: 36\n  num_attention_heads: 4\n"),
            "x.yaml:3: model.hidden_size: head dimension hidden_size / num_attention_heads = 9 "
            "must be even for rotary embeddings");
  EXPECT_EQ(error_of("data: {corpus: sotu}\nmodel:\n  hidden_size: 66\n  num_attention_heads: 4\n"
                     "  kv_channels: 9\n"),
            "x.yaml:5: model.kv_channels: 9 must be even for rotary embeddings");
}

TEST(ConfigErrors, MoeLayerFreqList) {
  EXPECT_EQ(moe_error("  moe_layer_freq: [0, 1, 1]\n"),
            "x.yaml:10: moe.moe_layer_freq: the list has 3 entries but model.num_layers is 4");
  EXPECT_EQ(moe_error("  moe_layer_freq: [0, 2, 1, 1]\n"),
            "x.yaml:10: moe.moe_layer_freq: list entries must be 0 or 1, got \"2\"");
  EXPECT_EQ(moe_error("  moe_layer_freq: [0, 0, 0, 0]\n"),
            "x.yaml:10: moe.moe_layer_freq: marks no layer as MoE but moe.num_experts is 8");
  EXPECT_EQ(error_of(std::string(kBase) + "moe:\n  moe_layer_freq: [0, 1, 1, 1]\n"),
            "x.yaml:8: moe.moe_layer_freq: marks MoE layers but moe.num_experts is 0");
}

TEST(ConfigErrors, RouterOptionsThatDoNotFit) {
  EXPECT_EQ(moe_error("  moe_router_enable_expert_bias: true\n"),
            "x.yaml:10: moe.moe_router_enable_expert_bias: expert bias needs "
            "moe.moe_router_score_function sigmoid, not softmax");
  EXPECT_EQ(moe_error("  moe_router_score_function: sigmoid\n  moe_router_pre_softmax: true\n"),
            "x.yaml:11: moe.moe_router_pre_softmax: only applies to "
            "moe.moe_router_score_function softmax");
  EXPECT_EQ(moe_error("  moe_router_num_groups: 3\n  moe_router_group_topk: 1\n"),
            "x.yaml:10: moe.moe_router_num_groups: moe.num_experts 8 is not divisible by 3 groups");
  EXPECT_EQ(moe_error("  moe_router_num_groups: 2\n  moe_router_group_topk: 4\n"),
            "x.yaml:11: moe.moe_router_group_topk: 4 must be between 1 and "
            "moe.moe_router_num_groups 2");
  EXPECT_EQ(
      moe_error("  moe_router_topk: 3\n  moe_router_num_groups: 4\n  moe_router_group_topk: 2\n"),
      "x.yaml:10: moe.moe_router_topk: 3 is not divisible by moe.moe_router_group_topk 2");
  EXPECT_EQ(moe_error("  moe_router_group_topk: 2\n"),
            "x.yaml:10: moe.moe_router_group_topk: needs moe.moe_router_num_groups > 0");
  EXPECT_EQ(moe_error("  moe_pad_expert_input_to_capacity: true\n"),
            "x.yaml:10: moe.moe_pad_expert_input_to_capacity: needs "
            "moe.moe_expert_capacity_factor > 0");
}

// Load-driven FSSDP: the combinations it does not support yet, each named.
TEST(ConfigErrors, LoadDrivenFssdpThatDoesNotFit) {
  EXPECT_THAT(moe_error("", {"parallel.fssdp_spare_slots=1", "parallel.moe_fssdp=true"}),
              HasSubstr("parallel.fssdp_spare_slots=1: not supported yet together with "
                        "parallel.moe_fssdp"));
  EXPECT_THAT(moe_error("", {"parallel.fssdp_spare_slots=1",
                             "parallel.expert_tensor_parallel_size=2"}),
              HasSubstr("parallel.fssdp_spare_slots=1: not supported yet with "
                        "expert_tensor_parallel_size > 1"));
  EXPECT_THAT(moe_error("  moe_token_dispatcher_type: allgather\n",
                        {"parallel.fssdp_spare_slots=1"}),
              HasSubstr("parallel.fssdp_spare_slots=1: needs moe.moe_token_dispatcher_type "
                        "alltoall"));
  EXPECT_THAT(moe_error("", {"parallel.fssdp_rematerialise=true"}),
              HasSubstr("parallel.fssdp_rematerialise=true: needs parallel.fssdp_spare_slots > 0"));
  EXPECT_THAT(moe_error("", {"parallel.fssdp_spare_slots=-1"}),
              HasSubstr("parallel.fssdp_spare_slots"));
}

TEST(ConfigErrors, ScheduleAndDataAndCheckpoint) {
  EXPECT_EQ(error_of(std::string(kBase) + "optimizer:\n  lr: 1e-4\n  min_lr: 1e-3\n"),
            "x.yaml:9: optimizer.min_lr: 0.001 is larger than optimizer.lr 0.0001");
  EXPECT_EQ(error_of(std::string(kBase) + "training:\n  train_iters: 10\n"
                                          "optimizer:\n  lr_warmup_iters: 20\n"),
            "x.yaml:10: optimizer.lr_warmup_iters: 20 is more than the 10 decay iterations "
            "(optimizer.lr_decay_iters, 0 = training.train_iters)");
  EXPECT_EQ(error_of("model:\n  num_layers: 2\n"),
            "x.yaml: data.data_path: no training data: set data.data_path or data.corpus");
  EXPECT_EQ(error_of("data:\n  data_path: \"0.8 a 0.2\"\n"),
            "x.yaml:2: data.data_path: expected one prefix or positive \"weight prefix\" pairs, "
            "e.g. \"0.8 a 0.2 b\"");
  EXPECT_EQ(error_of("data:\n  data_path: [a, b]\n"),
            "x.yaml:2: data.data_path: expected one prefix or positive \"weight prefix\" pairs, "
            "e.g. \"0.8 a 0.2 b\"");
  EXPECT_EQ(error_of("data:\n  data_path: \"0 a 1 b\"\n"),
            "x.yaml:2: data.data_path: expected one prefix or positive \"weight prefix\" pairs, "
            "e.g. \"0.8 a 0.2 b\"");
  EXPECT_EQ(error_of("data:\n  corpus: sotu\n  split: \"90,x,1\"\n"),
            "x.yaml:3: data.split: \"90,x,1\" is not up to three non-negative weights separated "
            "by , or /, e.g. \"969,30,1\"");
  EXPECT_EQ(error_of("data:\n  data_path: a\n  tokenizer_type: \"null\"\n"),
            "x.yaml:3: data.tokenizer_type: null needs model.vocab_size > 0");
  EXPECT_EQ(error_of("data:\n  corpus: sotu\n  reset_position_ids: true\n"),
            "x.yaml:3: data.reset_position_ids: not supported yet: must be false");
  EXPECT_EQ(error_of(std::string(kBase) + "checkpoint:\n  save_interval: 10\n"),
            "x.yaml:8: checkpoint.save_interval: needs a checkpoint.save directory");
  EXPECT_EQ(error_of(std::string(kBase) + "training:\n  recompute_granularity: selective\n"),
            "x.yaml:8: training.recompute_granularity: selective has nothing to drop here: "
            "attention keeps no (S,S) scores, only its output and log-sum-exp (use full or none)");
  EXPECT_EQ(error_of(std::string(kBase) +
                     "parallel:\n  zero_bubble_pipeline: true\n"
                     "training:\n  recompute_granularity: full\n"),
            "x.yaml:8: parallel.zero_bubble_pipeline: needs the stored activations: "
            "training.recompute_granularity none");
  EXPECT_EQ(error_of(std::string(kBase) + "parallel:\n  overlap_param_gather: true\n"),
            "x.yaml:8: parallel.overlap_param_gather: needs parallel.use_distributed_optimizer: "
            "true");
  EXPECT_EQ(error_of(std::string(kBase) + "training:\n  device: tpu\n"),
            "x.yaml:8: training.device: \"tpu\" is not one of cpu, cuda (did you mean cpu?)");
}

TEST(ConfigErrors, DuplicateKeysAndSections) {
  EXPECT_EQ(error_of("model:\n  num_layers: 2\n  num_layers: 3\n"),
            "x.yaml:3: model.num_layers: set twice (first at x.yaml:2)");
  EXPECT_EQ(error_of(std::string(kBase) + "model:\n  num_layers: 2\n"),
            "x.yaml:7: model: section given twice");
}

TEST(ConfigErrors, YamlSyntaxErrorGivesLineAndColumn) {
  const std::string message = error_of("model:\n  num_layers: [1, 2\ndata: {corpus: sotu}\n");
  EXPECT_THAT(message, StartsWith("x.yaml:"));
  EXPECT_THAT(message, HasSubstr(": YAML syntax error: "));
  EXPECT_EQ(error_of("model:\n  num_layers: 2\n bad indentation: 1\n").substr(0, 9), "x.yaml:3:");
}

TEST(ConfigErrors, MissingFile) {
  absl::StatusOr<Recipe> recipe = load_recipe("no/such/recipe.yaml", {});
  ASSERT_FALSE(recipe.ok());
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(recipe.status().message(), "no/such/recipe.yaml: recipe file not found");
}

TEST(ConfigErrors, ErrorInARecipeFileNamesTheFileAndLine) {
  const std::string path =
      std::string(MOEFOLD_SOURCE_DIR) + "/tests/trainer/testdata/topk_too_large.yaml";
  absl::StatusOr<Recipe> recipe = load_recipe(path, {});
  ASSERT_FALSE(recipe.ok());
  EXPECT_EQ(recipe.status().message(),
            path + ":9: moe.moe_router_topk: 9 is larger than moe.num_experts 8");
  // Fixed from the command line.
  EXPECT_TRUE(load_recipe(path, {"moe.moe_router_topk=8"}).ok());
}

TEST(ConfigErrors, OverridesAreCheckedLikeTheFile) {
  EXPECT_EQ(error_of(kBase, {"training.train_iter=5"}),
            "--set training.train_iter=5: unknown key (did you mean training.train_iters?)");
  EXPECT_EQ(error_of(kBase, {"training.train_iters=many"}),
            "--set training.train_iters=many: expected an integer, got \"many\"");
  EXPECT_EQ(error_of(kBase, {"training.train_iters=-1"}),
            "--set training.train_iters=-1: -1 is out of range (must be ≥ 1)");
  EXPECT_EQ(error_of(kBase, {"training.train_iters"}),
            "--set training.train_iters: expected section.key=value, e.g. "
            "training.train_iters=100");
  EXPECT_THAT(error_of(kBase, {"moe.moe_layer_freq=[0,1"}),
              StartsWith("--set moe.moe_layer_freq=[0,1: YAML syntax error: "));
  EXPECT_EQ(error_of(std::string(kBase) + "moe:\n  num_experts: 8\n  moe_ffn_hidden_size: 32\n",
                     {"moe.moe_router_topk=9"}),
            "--set moe.moe_router_topk=9: 9 is larger than moe.num_experts 8");
}

TEST(ConfigErrors, WorldSizeChecks) {
  absl::StatusOr<Recipe> recipe =
      parse_recipe_string(std::string(kBase) +
                              "moe:\n  num_experts: 8\n  moe_ffn_hidden_size: 32\n"
                              "parallel:\n  expert_model_parallel_size: 4\n"
                              "training:\n  micro_batch_size: 2\n  global_batch_size: 24\n",
                          "x.yaml", {});
  ASSERT_TRUE(recipe.ok()) << recipe.status().message();
  EXPECT_TRUE(validate_recipe_for_world(*recipe, 4).ok());
  EXPECT_EQ(validate_recipe_for_world(*recipe, 8).message(),
            "x.yaml:14: training.global_batch_size: 24 is not a multiple of "
            "training.micro_batch_size 2 × data-parallel size 8 = 16 (world size 8)");
  const std::string layout = std::string(validate_recipe_for_world(*recipe, 6).message());
  EXPECT_THAT(layout, StartsWith("x.yaml: parallel: "));
  EXPECT_THAT(layout, HasSubstr("world size 6"));
  recipe->parallel.tensor_model_parallel_size = 8;
  recipe->parallel.expert_tensor_parallel_size = 1;
  EXPECT_THAT(std::string(validate_recipe_for_world(*recipe, 8).message()),
              HasSubstr("num_attention_heads 4 is not divisible by tensor_model_parallel_size 8"));
  EXPECT_FALSE(validate_recipe_for_world(*recipe, 0).ok());
}

TEST(ConfigErrors, UnevenPipelineSplit) {
  absl::StatusOr<Recipe> recipe =
      parse_recipe_string(std::string(kBase) +
                              "parallel:\n  pipeline_model_parallel_size: 3\n"
                              "  decoder_first_pipeline_num_layers: 2\n",
                          "x.yaml", {});
  ASSERT_TRUE(recipe.ok()) << recipe.status().message();
  EXPECT_TRUE(validate_recipe_for_world(*recipe, 3).ok());  // 2 + 1 + 1 of 4 layers
  recipe->parallel.decoder_first_pipeline_num_layers = 3;
  EXPECT_EQ(validate_recipe_for_world(*recipe, 3).message(),
            "x.yaml: the 1 layers left by model.num_layers 4 - "
            "parallel.decoder_first_pipeline_num_layers 3 is fewer than the 2 pieces of 2 middle "
            "stage(s) (each needs a layer)");
}

}  // namespace
}  // namespace moefold
