// Resharding on load (issue 9): a checkpoint written under a multi-rank layout resumes in one
// process, and one written by one process resumes under the layout, each continuing with the
// losses of an uninterrupted single-process run. Each layout runs at the rank count it needs
// (0: any) and is skipped at the others.
#include <gtest/gtest.h>
#include <mpi.h>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

constexpr int kSteps = 6, kSplit = 3;

std::vector<StepRecord> continue_from(const Recipe& recipe, const ParallelContext& ctx,
                                      const std::string& checkpoint) {
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return {};
  const absl::Status loaded = (*trainer)->load_checkpoint(checkpoint);
  EXPECT_TRUE(loaded.ok()) << loaded;
  std::vector<StepRecord> out;
  for (int i = kSplit; i < kSteps && loaded.ok(); ++i) {
    auto m = (*trainer)->train_step(i);
    EXPECT_TRUE(m.ok()) << m.status();
    if (m.ok()) out.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
  }
  return out;
}

void save_after_split(const Recipe& recipe, const ParallelContext& ctx) {
  auto trainer = Trainer::create(recipe, ctx);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  for (int i = 0; i < kSplit; ++i) ASSERT_TRUE((*trainer)->train_step(i).ok());
  ASSERT_TRUE((*trainer)->save_checkpoint(kSplit).ok());
}

class Reshard : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("reshard", 13); }
  static inline std::string dir_;
};

TEST_P(Reshard, ResumesInOneProcessAndBack) {
  const InvarianceLayout& layout = GetParam();
  if (layout.world != 0 && world_size() != layout.world) {
    GTEST_SKIP() << layout.name << " runs on " << layout.world << " ranks";
  }
  const std::string run = dir_ + "/" + layout.name;
  const std::string rank_dir = run + "/rank" + std::to_string(world_rank());
  const auto recipe = [&](const std::string& save, const std::vector<std::string>& parallel) {
    std::vector<std::string> overrides = layout.model;
    overrides.push_back("training.train_iters=6");
    overrides.push_back("checkpoint.save=" + save);
    overrides.insert(overrides.end(), parallel.begin(), parallel.end());
    return tiny_recipe(tiny_prefix(dir_), rank_dir, overrides);
  };
  const ParallelContext one = ParallelContext::single_process();
  const std::vector<StepRecord> straight = run_steps(recipe(rank_dir + "/unused", {}), one, kSteps);
  ASSERT_EQ(straight.size(), static_cast<size_t>(kSteps));

  const Recipe parallel_recipe = recipe(run + "/parallel", layout.parallel);
  auto ctx = ParallelContext::create(parallel_recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  save_after_split(parallel_recipe, *ctx);
  const std::vector<StepRecord> in_one =
      continue_from(recipe(run + "/parallel", {}), one, run + "/parallel");
  ASSERT_EQ(in_one.size(), static_cast<size_t>(kSteps - kSplit));
  expect_same_steps(in_one, straight, kSplit);

  if (world_rank() == 0) save_after_split(recipe(run + "/single", {}), one);
  MPI_Barrier(MPI_COMM_WORLD);
  const std::vector<StepRecord> in_all =
      continue_from(recipe(run + "/single", layout.parallel), *ctx, run + "/single");
  ASSERT_EQ(in_all.size(), static_cast<size_t>(kSteps - kSplit));
  expect_same_steps(in_all, straight, kSplit);
}

std::vector<std::string> sizes(int tp, int ep, int pp, int cp = 1) {
  return {"parallel.tensor_model_parallel_size=" + std::to_string(tp),
          "parallel.expert_model_parallel_size=" + std::to_string(ep),
          "parallel.expert_tensor_parallel_size=1",
          "parallel.pipeline_model_parallel_size=" + std::to_string(pp),
          "parallel.context_parallel_size=" + std::to_string(cp)};
}

const std::vector<std::string> kFourLayers = {"model.num_layers=4", "moe.moe_layer_freq=[0,1,0,1]"};

INSTANTIATE_TEST_SUITE_P(
    Layouts, Reshard,
    ::testing::Values(InvarianceLayout{"dp", 0, {}, {}},
                      InvarianceLayout{"distributed_optimizer", 0, {},
                                       {"parallel.use_distributed_optimizer=true"}},
                      InvarianceLayout{"tp2", 2, {}, sizes(2, 1, 1)},
                      InvarianceLayout{"ep2", 2, {}, sizes(1, 2, 1)},
                      InvarianceLayout{"pp2", 2, kFourLayers, sizes(1, 1, 2)},
                      InvarianceLayout{"cp2", 2, {}, sizes(1, 1, 1, 2)},
                      InvarianceLayout{"tp2_ep2", 4, {}, sizes(2, 2, 1)},
                      InvarianceLayout{"pp2_ep2_dp2", 4, kFourLayers, sizes(1, 2, 2)},
                      InvarianceLayout{"fssdp", 0, {}, {"parallel.moe_fssdp=true"}},
                      InvarianceLayout{"ep2_fssdp_distributed", 4, {},
                                       {"parallel.expert_model_parallel_size=2",
                                        "parallel.moe_fssdp=true",
                                        "parallel.use_distributed_optimizer=true"}},
                      InvarianceLayout{"ep4_placement", 4, {},
                                       {"parallel.expert_model_parallel_size=4",
                                        "parallel.fssdp_spare_slots=2"}},
                      InvarianceLayout{"pp2_ep2_placement", 4, kFourLayers,
                                       {"parallel.pipeline_model_parallel_size=2",
                                        "parallel.expert_model_parallel_size=2",
                                        "parallel.fssdp_spare_slots=1"}}),
    [](const ::testing::TestParamInfo<InvarianceLayout>& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::testing
