// Against published GPU results: the MoE Parallel Folding paper (Liu et al., 2025,
// arXiv 2504.14960) reports MFU on DGX H100 (bf16, capacity factor 1, global batch 256, seq
// 4096). The planner, with clusters/dgx_h100.yaml's constants for both models, must land within
// 15% (relative) of each figure and rank folding above no folding for both models.
#include <gtest/gtest.h>

#include "planner/plan.h"
#include "planner_test_util.h"

namespace moefold {
namespace {

struct PublishedRow {
  const char* recipe;
  int gpus;
  int ep, etp;  // CP 1, TP 2 and PP as the recipe has them
  double mfu;
};

constexpr PublishedRow kRows[] = {
    {"mixtral_8x22b.yaml", 128, 4, 2, 0.463},  // 1/2/4/8/TP: no folding
    {"mixtral_8x22b.yaml", 128, 8, 1, 0.493},  // 1/2/8/8/1: folding
    {"qwen2_57b_a14b.yaml", 64, 4, 2, 0.353},  // 1/2/4/4/TP
    {"qwen2_57b_a14b.yaml", 64, 4, 1, 0.390},  // 1/2/4/4/1
};

double predicted_mfu(const PublishedRow& row) {
  auto recipe = load_recipe(testing::kSourceDir + "/configs/" + row.recipe,
                            {"parallel.expert_model_parallel_size=" + std::to_string(row.ep),
                             "parallel.expert_tensor_parallel_size=" + std::to_string(row.etp)});
  EXPECT_TRUE(recipe.ok()) << recipe.status().message();
  EXPECT_EQ(recipe->parallel.tensor_model_parallel_size, 2);
  EXPECT_EQ(recipe->parallel.context_parallel_size, 1);
  EXPECT_EQ(recipe->training.global_batch_size, 256);
  EXPECT_EQ(recipe->model.seq_length, 4096);
  auto plan = make_plan(*recipe, testing::cluster_file("dgx_h100.yaml"), row.gpus, {});
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  return plan.ok() ? plan->mfu : 0;
}

TEST(PublishedParallelFolding, MfuWithinFifteenPercent) {
  for (const PublishedRow& row : kRows) {
    const double mfu = predicted_mfu(row);
    SCOPED_TRACE(::testing::Message() << row.recipe << " EP" << row.ep << " ETP" << row.etp
                                      << ": predicted " << mfu << ", published " << row.mfu);
    EXPECT_LT(std::abs(mfu - row.mfu) / row.mfu, 0.15);
  }
}

TEST(PublishedParallelFolding, FoldingBeatsNoFolding) {
  EXPECT_GT(predicted_mfu(kRows[1]), predicted_mfu(kRows[0]));  // Mixtral-8x22B
  EXPECT_GT(predicted_mfu(kRows[3]), predicted_mfu(kRows[2]));  // Qwen2-57B-A14B
}

}  // namespace
}  // namespace moefold
