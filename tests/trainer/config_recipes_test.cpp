// Every committed recipe in configs/ parses and validates for the world size it is written for.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>

#include "trainer/config_parse.h"
#include "trainer/config_validate.h"

namespace moefold {
namespace {

const std::string kSourceDir = MOEFOLD_SOURCE_DIR;

// The world size each recipe's comment says it is laid out for.
const std::map<std::string, int> kRecipeWorldSizes = {
    {"demo.yaml", 1},
    {"gpu_bench.yaml", 1},
    {"mixtral_8x7b.yaml", 64},
    {"deepseek_v3_style.yaml", 1024},
    {"qwen_moe.yaml", 128},
    {"mixtral_8x22b.yaml", 128},
    {"qwen2_57b_a14b.yaml", 64},
    {"qwen3_30b_a3b.yaml", 64},
};

TEST(ConfigRecipes, EveryCommittedRecipeValidates) {
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSourceDir + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    ASSERT_EQ(kRecipeWorldSizes.count(name), 1u) << "add " << name << " to kRecipeWorldSizes";
    absl::StatusOr<Recipe> recipe = load_recipe(entry.path().string(), {});
    ASSERT_TRUE(recipe.ok()) << recipe.status().message();
    const absl::Status status = validate_recipe_for_world(*recipe, kRecipeWorldSizes.at(name));
    EXPECT_TRUE(status.ok()) << status.message();
    ++seen;
  }
  EXPECT_EQ(seen, static_cast<int>(kRecipeWorldSizes.size()));
}

TEST(ConfigRecipes, DemoAlsoRunsOnTwoRanks) {
  absl::StatusOr<Recipe> recipe = load_recipe(kSourceDir + "/configs/demo.yaml", {});
  ASSERT_TRUE(recipe.ok()) << recipe.status().message();
  recipe->model.vocab_size = 50257;  // what the GPT-2 tokenizer fills in
  EXPECT_EQ(recipe->model.padded_vocab_size(), 50304);
  EXPECT_TRUE(validate_recipe_for_world(*recipe, 2).ok());
  EXPECT_TRUE(validate_recipe_for_world(*load_recipe(kSourceDir + "/configs/demo.yaml",
                                                     {"parallel.expert_model_parallel_size=2"}),
                                        2)
                  .ok());
}

TEST(ConfigRecipes, RealRecipesHaveTheirPublishedShapes) {
  absl::StatusOr<Recipe> mixtral = load_recipe(kSourceDir + "/configs/mixtral_8x7b.yaml", {});
  ASSERT_TRUE(mixtral.ok()) << mixtral.status().message();
  EXPECT_EQ(mixtral->model.moe.num_experts, 8);
  EXPECT_EQ(mixtral->model.moe.moe_router_topk, 2);
  EXPECT_EQ(std::count(mixtral->model.moe.moe_layer_pattern.begin(),
                       mixtral->model.moe.moe_layer_pattern.end(), 1),
            32);
  absl::StatusOr<Recipe> deepseek = load_recipe(kSourceDir + "/configs/deepseek_v3_style.yaml", {});
  ASSERT_TRUE(deepseek.ok()) << deepseek.status().message();
  const MoeConfig& moe = deepseek->model.moe;
  EXPECT_EQ(moe.moe_layer_pattern.size(), 64u);
  EXPECT_EQ(std::count(moe.moe_layer_pattern.begin(), moe.moe_layer_pattern.end(), 0), 3);
  EXPECT_EQ(moe.moe_router_score_function, RouterScoreFunction::kSigmoid);
  EXPECT_TRUE(moe.moe_router_enable_expert_bias);
  EXPECT_EQ(deepseek->model.padded_vocab_size(), 129280);
}

}  // namespace
}  // namespace moefold
