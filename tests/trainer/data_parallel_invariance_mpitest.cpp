// Data-parallel invariance (DESIGN.md): DP over every rank of the world gives the per-step losses
// and gradient norms of one process on the same global batch, with plain all-reduce or the
// distributed optimizer, overlapped or not; and the distributed optimizer's state per rank falls
// as 1/DP.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

class TinyDataTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = shared_tiny_corpus("dp-invariance", 11);
    prefix_ = tiny_prefix(dir_);
  }
  static inline std::string dir_, prefix_;
};

class DataParallelInvariance : public TinyDataTest,
                               public ::testing::WithParamInterface<std::vector<std::string>> {};

TEST_P(DataParallelInvariance, MatchesSingleProcess) {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::replace(name.begin(), name.end(), '/', '_');
  expect_matches_single_process(dir_, name, {}, GetParam());
}

// Small buckets, so that each set has several and overlap has something to overlap.
INSTANTIATE_TEST_SUITE_P(
    Layouts, DataParallelInvariance,
    ::testing::Values(
        std::vector<std::string>{},
        std::vector<std::string>{"parallel.ddp_bucket_size=2000"},
        std::vector<std::string>{"parallel.ddp_bucket_size=2000",
                                 "parallel.overlap_grad_reduce=true"},
        std::vector<std::string>{"parallel.ddp_bucket_size=2000",
                                 "parallel.use_distributed_optimizer=true"},
        std::vector<std::string>{"parallel.ddp_bucket_size=2000",
                                 "parallel.use_distributed_optimizer=true",
                                 "parallel.overlap_grad_reduce=true"},
        std::vector<std::string>{"parallel.ddp_bucket_size=2000",
                                 "parallel.use_distributed_optimizer=true",
                                 "parallel.overlap_grad_reduce=true",
                                 "parallel.overlap_param_gather=true"},
        std::vector<std::string>{"parallel.use_distributed_optimizer=true",
                                 "parallel.overlap_grad_reduce=true",
                                 "parallel.overlap_param_gather=true"}));

// Adam state bytes per rank, measured by the tensor allocator when the optimizer is built: with
// the distributed optimizer every element's state lives on exactly one DP rank, so the ranks'
// bytes sum to the single process's and each holds 1/DP of them (up to bucket padding).
TEST_F(TinyDataTest, DistributedOptimizerStateFallsAsOneOverDp) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string single_dir = dir_ + "/memory-single-" + std::to_string(rank);
  auto single =
      Trainer::create(tiny_recipe(prefix_, single_dir), ParallelContext::single_process());
  ASSERT_TRUE(single.ok()) << single.status();
  const int64_t full = (*single)->data_parallel().optimizer_state_bytes();
  EXPECT_EQ(full, 2 * 4 * (*single)->model().parameter_count());

  for (bool distributed : {false, true}) {
    SCOPED_TRACE(distributed ? "distributed optimizer" : "plain");
    const Recipe recipe = tiny_recipe(
        prefix_, dir_ + "/memory", {"parallel.ddp_bucket_size=2000",
                                    std::string("parallel.use_distributed_optimizer=") +
                                        (distributed ? "true" : "false")});
    auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    auto trainer = Trainer::create(recipe, *ctx);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    const DataParallelState& dp = (*trainer)->data_parallel();
    int64_t bytes = dp.optimizer_state_bytes(), sum = bytes;
    ctx->world->all_reduce(std::span<int64_t>(&sum, 1));
    if (!distributed) {
      EXPECT_EQ(bytes, full);
      continue;
    }
    EXPECT_EQ(sum, full);  // each element's state on exactly one rank
    const int64_t padding = 2 * 4 * int64_t{dp.num_buckets()};  // < 1 element per bucket
    EXPECT_LE(bytes, full / world + padding);
    EXPECT_GE(bytes, full / world - padding * (world - 1));
    EXPECT_GT(dp.num_buckets(), 2);
  }
}

// With overlap_grad_reduce every bucket is launched from the last micro-batch's backward, before
// the step asks; without it none is.
TEST_F(TinyDataTest, OverlapLaunchesEveryBucketDuringBackward) {
  for (bool overlap : {false, true}) {
    const Recipe recipe = tiny_recipe(
        prefix_, dir_ + "/overlap",
        {"parallel.ddp_bucket_size=2000", "parallel.use_distributed_optimizer=true",
         std::string("parallel.overlap_grad_reduce=") + (overlap ? "true" : "false")});
    auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    auto trainer = Trainer::create(recipe, *ctx);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    for (int i = 0; i < 2; ++i) ASSERT_TRUE((*trainer)->train_step(i).ok());
    const DataParallelState& dp = (*trainer)->data_parallel();
    EXPECT_EQ(dp.buckets_launched_in_backward(), overlap ? dp.num_buckets() : 0);
  }
}

// Checkpoints stay layout-independent: the distributed optimizer's moments, gathered at every
// parameter's shape, are the single process's (to float32 tolerance: only the reduction order
// differs), and scattering them into another sharded optimizer gives them back bit for bit.
TEST_F(TinyDataTest, DistributedOptimizerStateGathersToEveryParameterShape) {
  constexpr int kSteps = 3;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string single_dir = dir_ + "/state-single-" + std::to_string(rank);
  auto single =
      Trainer::create(tiny_recipe(prefix_, single_dir), ParallelContext::single_process());
  ASSERT_TRUE(single.ok()) << single.status();
  for (int i = 0; i < kSteps; ++i) ASSERT_TRUE((*single)->train_step(i).ok());
  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/state",
                                    {"parallel.ddp_bucket_size=2000",
                                     "parallel.use_distributed_optimizer=true",
                                     "parallel.overlap_grad_reduce=true",
                                     "parallel.overlap_param_gather=true"});
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto sharded = Trainer::create(recipe, *ctx);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  for (int i = 0; i < kSteps; ++i) ASSERT_TRUE((*sharded)->train_step(i).ok());

  DataParallelState& dp = (*sharded)->data_parallel();
  const std::vector<Tensor> want_m = (*single)->data_parallel().gather_exp_avg();
  const std::vector<Tensor> want_v = (*single)->data_parallel().gather_exp_avg_sq();
  const std::vector<Tensor> m = dp.gather_exp_avg(), v = dp.gather_exp_avg_sq();
  const std::vector<Parameter*> params = (*sharded)->model().parameters();
  ASSERT_EQ(m.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i]->name());
    ASSERT_EQ(m[i].shape(), params[i]->layout.local_shape);
    for (const auto& [got, want] : {std::pair{m[i], want_m[i]}, std::pair{v[i], want_v[i]}}) {
      const std::vector<float> g = got.to_vector(), w = want.to_vector();
      float scale = 0;
      for (float x : w) scale = std::max(scale, std::abs(x));
      for (size_t j = 0; j < g.size(); ++j) ASSERT_NEAR(g[j], w[j], 1e-4f * scale + 1e-12f) << j;
    }
  }
  EXPECT_EQ(dp.optimizer_steps(), kSteps);

  auto fresh = Trainer::create(recipe, *ctx);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  DataParallelState& restored = (*fresh)->data_parallel();
  restored.restore_optimizer(*dp.checkpoint_optimizer());
  EXPECT_EQ(restored.optimizer_steps(), kSteps);
  const std::vector<Tensor> m2 = restored.gather_exp_avg(), v2 = restored.gather_exp_avg_sq();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(m2[i].to_vector(), m[i].to_vector()) << params[i]->name();
    EXPECT_EQ(v2[i].to_vector(), v[i].to_vector()) << params[i]->name();
  }
}

// A checkpoint written under `parallel` (overlapped gathers in flight at the save) resumes under
// the same layout with bit-identical steps, and in one process with the steps of an
// uninterrupted single-process run.
void expect_checkpoint_resumes(const std::string& prefix, const std::string& dir,
                               const std::vector<std::string>& parallel) {
  constexpr int kSteps = 6, kSplit = 3;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string save = dir + "/ckpt";
  std::vector<std::string> overrides = {"training.train_iters=6", "checkpoint.save=" + save,
                                        "parallel.ddp_bucket_size=2000"};
  overrides.insert(overrides.end(), parallel.begin(), parallel.end());
  const Recipe recipe = tiny_recipe(prefix, dir + "/resume", overrides);
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const std::vector<StepRecord> straight = run_steps(recipe, *ctx, kSteps);
  {
    auto first = Trainer::create(recipe, *ctx);
    ASSERT_TRUE(first.ok()) << first.status();
    for (int i = 0; i < kSplit; ++i) ASSERT_TRUE((*first)->train_step(i).ok());
    ASSERT_TRUE((*first)->save_checkpoint(kSplit).ok());
  }
  const auto continue_from_checkpoint = [&](const Recipe& r, const ParallelContext& c) {
    std::vector<StepRecord> out;
    auto trainer = Trainer::create(r, c);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    if (!trainer.ok()) return out;
    const absl::Status loaded = (*trainer)->load_checkpoint(save);
    EXPECT_TRUE(loaded.ok()) << loaded;
    for (int i = kSplit; i < kSteps && loaded.ok(); ++i) {
      auto m = (*trainer)->train_step(i);
      EXPECT_TRUE(m.ok()) << m.status();
      if (m.ok()) out.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
    }
    return out;
  };

  const std::vector<StepRecord> resumed = continue_from_checkpoint(recipe, *ctx);
  ASSERT_EQ(resumed.size(), static_cast<size_t>(kSteps - kSplit));
  for (int i = 0; i < kSteps - kSplit; ++i) {
    EXPECT_EQ(resumed[i].lm_loss, straight[kSplit + i].lm_loss) << "step " << kSplit + i + 1;
    EXPECT_EQ(resumed[i].grad_norm, straight[kSplit + i].grad_norm) << "step " << kSplit + i + 1;
  }

  const std::string single_dir = dir + "/resume-single-" + std::to_string(rank);
  const Recipe single = tiny_recipe(prefix, single_dir, {"training.train_iters=6"});
  const std::vector<StepRecord> reference =
      run_steps(single, ParallelContext::single_process(), kSteps);
  const std::vector<StepRecord> in_one =
      continue_from_checkpoint(single, ParallelContext::single_process());
  ASSERT_EQ(in_one.size(), static_cast<size_t>(kSteps - kSplit));
  expect_same_steps(in_one, reference, kSplit);
}

TEST_F(TinyDataTest, DistributedOptimizerCheckpointResumes) {
  expect_checkpoint_resumes(prefix_, dir_ + "/dist",
                            {"parallel.use_distributed_optimizer=true",
                             "parallel.overlap_grad_reduce=true",
                             "parallel.overlap_param_gather=true"});
}

// The same with the experts fully sharded (FSSDP): their shards and Adam state resume exactly.
TEST_F(TinyDataTest, FssdpCheckpointResumes) {
  expect_checkpoint_resumes(prefix_, dir_ + "/fssdp",
                            {"parallel.moe_fssdp=true", "parallel.use_distributed_optimizer=true",
                             "parallel.overlap_grad_reduce=true"});
}

}  // namespace
}  // namespace moefold::testing
