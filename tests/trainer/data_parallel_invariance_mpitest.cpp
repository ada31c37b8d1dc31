// Data-parallel invariance (DESIGN.md): DP over every rank of the world gives the per-step losses
// and gradient norms of one process on the same global batch.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>

#include "tiny_run.h"

namespace moefold::testing {
namespace {

class DataParallelInvariance : public ::testing::TestWithParam<std::vector<std::string>> {
 protected:
  static void SetUpTestSuite() {
    int world = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    dir_ = (std::filesystem::temp_directory_path() /
            ("moefold-dp-invariance-np" + std::to_string(world)))
               .string();
    if (rank == 0) {
      std::filesystem::remove_all(dir_);
      prefix_ = write_tiny_dataset(dir_, 300, 11);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    prefix_ = dir_ + "/tiny_text_document";
  }
  static inline std::string dir_, prefix_;
};

TEST_P(DataParallelInvariance, MatchesSingleProcess) {
  constexpr int kSteps = 5;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const Recipe reference_recipe = tiny_recipe(prefix_, dir_ + "/single-" + std::to_string(rank));
  const std::vector<StepRecord> reference =
      run_steps(reference_recipe, ParallelContext::single_process(), kSteps);

  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/parallel", GetParam());
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const std::vector<StepRecord> parallel = run_steps(recipe, *ctx, kSteps);

  ASSERT_EQ(reference.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(parallel.size(), static_cast<size_t>(kSteps));
  for (int i = 0; i < kSteps; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_NEAR(parallel[i].lm_loss, reference[i].lm_loss, 1e-5 * reference[i].lm_loss);
    EXPECT_NEAR(parallel[i].aux_loss, reference[i].aux_loss, 1e-5 * reference[i].aux_loss);
    EXPECT_NEAR(parallel[i].z_loss, reference[i].z_loss, 1e-5 * reference[i].z_loss);
    EXPECT_NEAR(parallel[i].grad_norm, reference[i].grad_norm, 1e-4 * reference[i].grad_norm);
  }
  EXPECT_LT(parallel.back().lm_loss, parallel.front().lm_loss);  // and it learns
}

INSTANTIATE_TEST_SUITE_P(Layouts, DataParallelInvariance,
                         ::testing::Values(std::vector<std::string>{}));

}  // namespace
}  // namespace moefold::testing
