// Context-parallel recipe errors (trainer/config_validate.cpp): seq_length must split into 2·CP
// chunks, each split again over TP under sequence parallelism.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "trainer/config_parse.h"
#include "trainer/config_validate.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;

Recipe recipe_with(int cp, int tp, bool sequence_parallel) {
  absl::StatusOr<Recipe> recipe = parse_recipe_string(
      "model:\n  num_layers: 2\n  hidden_size: 64\n  num_attention_heads: 4\n"
      "  seq_length: 12\ndata:\n  corpus: sotu\n",
      "x.yaml", {});
  EXPECT_TRUE(recipe.ok()) << recipe.status().message();
  recipe->parallel.context_parallel_size = cp;
  recipe->parallel.tensor_model_parallel_size = tp;
  recipe->parallel.sequence_parallel = sequence_parallel;
  return *recipe;
}

TEST(ContextParallelConfig, SeqLengthSplitsIntoTwoChunksPerRank) {
  EXPECT_TRUE(validate_recipe_for_world(recipe_with(2, 1, false), 2).ok());
  EXPECT_THAT(std::string(validate_recipe_for_world(recipe_with(4, 1, false), 4).message()),
              HasSubstr("model.seq_length: 12 is not divisible by 2 × "
                        "parallel.context_parallel_size 4 = 8"));
}

TEST(ContextParallelConfig, SequenceParallelSplitsEachChunkOverTp) {
  EXPECT_TRUE(validate_recipe_for_world(recipe_with(2, 2, false), 4).ok());
  EXPECT_THAT(std::string(validate_recipe_for_world(recipe_with(2, 2, true), 4).message()),
              HasSubstr("model.seq_length: 12 is not divisible by 2 × "
                        "parallel.context_parallel_size 2 × parallel.tensor_model_parallel_size 2 "
                        "(sequence_parallel) = 8"));
}

}  // namespace
}  // namespace moefold
