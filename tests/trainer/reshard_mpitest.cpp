// Resharding on load: a checkpoint written by a multi-rank layout resumes in one process (and
// the other way round) and continues with the losses of an uninterrupted single-process run.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

constexpr int kSteps = 6, kSplit = 3;

std::vector<StepRecord> continue_from(const Recipe& recipe, const ParallelContext& ctx,
                                      const std::string& checkpoint) {
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_TRUE((*trainer)->load_checkpoint(checkpoint).ok());
  std::vector<StepRecord> out;
  for (int i = kSplit; i < kSteps; ++i) {
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

void expect_same_steps(const std::vector<StepRecord>& got, const std::vector<StepRecord>& want) {
  ASSERT_EQ(got.size(), static_cast<size_t>(kSteps - kSplit));
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(kSplit + i + 1));
    const StepRecord& w = want[kSplit + i];
    EXPECT_NEAR(got[i].lm_loss, w.lm_loss, 1e-5 * w.lm_loss);
    EXPECT_NEAR(got[i].aux_loss, w.aux_loss, 1e-5 * w.aux_loss);
    EXPECT_NEAR(got[i].grad_norm, w.grad_norm, 1e-4 * w.grad_norm);
  }
}

TEST(Reshard, ParallelCheckpointResumesInOneProcessAndBack) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("moefold-reshard-np" + std::to_string(world)))
                              .string();
  if (rank == 0) {
    std::filesystem::remove_all(dir);
    write_tiny_dataset(dir, 300, 13);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const std::string prefix = dir + "/tiny_text_document";
  const std::string rank_dir = dir + "/rank" + std::to_string(rank);
  const auto recipe_saving_to = [&](const std::string& save) {
    return tiny_recipe(prefix, rank_dir, {"training.train_iters=6", "checkpoint.save=" + save});
  };
  const std::vector<StepRecord> straight =
      run_steps(recipe_saving_to(rank_dir + "/unused"), ParallelContext::single_process(), kSteps);

  // Written by every rank together (DP = world), read back by each rank alone.
  const Recipe parallel_recipe = recipe_saving_to(dir + "/parallel");
  auto ctx = ParallelContext::create(parallel_recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  save_after_split(parallel_recipe, *ctx);
  expect_same_steps(continue_from(parallel_recipe, ParallelContext::single_process(),
                                  dir + "/parallel"),
                    straight);

  // Written by one process, read back by every rank together.
  const Recipe single_recipe = recipe_saving_to(dir + "/single");
  if (rank == 0) save_after_split(single_recipe, ParallelContext::single_process());
  MPI_Barrier(MPI_COMM_WORLD);
  expect_same_steps(continue_from(single_recipe, *ctx, dir + "/single"), straight);
}

}  // namespace
}  // namespace moefold::testing
