#include <gtest/gtest.h>

#include "trainer/config_parse.h"
#include "trainer/config_schema.h"

namespace moefold {
namespace {

// What a checkpoint stores must read back as the same recipe.
TEST(RecipeYaml, RoundTripsEveryKey) {
  auto recipe = load_recipe(std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml",
                            {"training.train_iters=77", "moe.moe_layer_freq=[0,1,0,1]",
                             "data.data_path=0.3 a 0.7 b"});
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  const std::string yaml = recipe_to_yaml(*recipe);
  auto again = parse_recipe_string(yaml, "saved.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << yaml;
  EXPECT_EQ(recipe_to_yaml(*again), yaml);
  EXPECT_EQ(again->training.train_iters, 77);
  EXPECT_EQ(again->model.moe.moe_layer_pattern, (std::vector<int>{0, 1, 0, 1}));
}

}  // namespace
}  // namespace moefold
