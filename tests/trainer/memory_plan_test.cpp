// Absurd sizes are one clear line before anything is allocated, not std::bad_alloc mid-build.
#include "trainer/memory_plan.h"

#include <gtest/gtest.h>

#include "tiny_run.h"

namespace moefold::testing {
namespace {

Recipe with(const std::vector<std::string>& overrides) {
  return tiny_recipe("unused_prefix", "unused_run_dir", overrides);
}

TEST(MemoryPlan, TinyRecipeFits) {
  Recipe recipe = with({});
  recipe.model.vocab_size = 256;
  EXPECT_TRUE(check_memory_plan(recipe, 1, 1e9).ok());
  EXPECT_GT(plan_memory(recipe, 1).parameters_per_rank, 1e4);
}

TEST(MemoryPlan, HugeVocabularyNamesTheEmbedding) {
  Recipe recipe = with({"model.vocab_size=1000000000"});
  const absl::Status status = check_memory_plan(recipe, 1, 16e9);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("16 GB available per rank; the largest part is the weights"),
            std::string::npos)
      << status;
  EXPECT_NE(status.message().find("vocab 1000000000"), std::string::npos) << status;
}

TEST(MemoryPlan, HugeSequenceNamesTheActivations) {
  Recipe recipe = with({"model.seq_length=1000000000"});
  recipe.model.vocab_size = 256;
  const absl::Status status = check_memory_plan(recipe, 1, 16e9);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("seq_length 1000000000"), std::string::npos) << status;
}

TEST(MemoryPlan, OverflowingProductsAreNamed) {
  Recipe recipe = with({});  // set directly: a recipe this large fails validation first
  recipe.model.seq_length = 2000000000;
  recipe.model.hidden_size = 2000000000;
  recipe.training.micro_batch_size = 2000000000;
  recipe.model.vocab_size = 2000000000;
  const absl::Status status = check_memory_plan(recipe, 1, 0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("overflow 64-bit element counts"), std::string::npos) << status;
}

TEST(MemoryPlan, MoreRanksShareTheState) {
  Recipe recipe = with({"parallel.use_distributed_optimizer=true"});
  recipe.model.vocab_size = 256;
  EXPECT_LT(plan_memory(recipe, 4).bytes_per_rank, plan_memory(recipe, 1).bytes_per_rank);
}

}  // namespace
}  // namespace moefold::testing
