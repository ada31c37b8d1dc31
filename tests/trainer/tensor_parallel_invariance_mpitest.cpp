// Tensor- and sequence-parallel invariance (DESIGN.md): TP=2 and TP=4, with and without sequence
// parallelism, and TP=2 with DP=2, also with the row-parallel exits chunked to overlap their
// reductions, give the per-step losses and gradient norms of one process on the same global
// batch (the tiny recipe's dense and MoE layers, shared expert, aux and z losses; and with
// sigmoid routing and the expert bias; and with q/k norms and their own head dim).
// Each layout runs at the rank count it needs and is skipped at the others.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "parallel/tp_communication.h"
#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

using TpLayout = InvarianceLayout;

std::vector<std::string> with_overlap(std::vector<std::string> overrides, int chunks) {
  overrides.push_back("parallel.tp_comm_overlap_chunks=" + std::to_string(chunks));
  return overrides;
}

std::vector<std::string> tp(int size, bool sequence_parallel) {
  return {"parallel.tensor_model_parallel_size=" + std::to_string(size),
          "parallel.expert_tensor_parallel_size=1",
          std::string("parallel.sequence_parallel=") + (sequence_parallel ? "true" : "false")};
}

class TensorParallelInvariance : public ::testing::TestWithParam<TpLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("tp-invariance", 13); }
  static inline std::string dir_;
};

TEST_P(TensorParallelInvariance, MatchesSingleProcess) {
  const TpLayout& layout = GetParam();
  if (world_size() != layout.world) {
    GTEST_SKIP() << layout.name << " runs on " << layout.world << " ranks";
  }
  expect_matches_single_process(dir_, layout.name, layout.model, layout.parallel);
}

const std::vector<std::string> kFourGroups = {"model.num_query_groups=4"};
// Sigmoid scores with the aux-loss-free expert bias, updated fast enough to change routing
// within the run: the expert counts summed over the layout must be the single process's.
const std::vector<std::string> kExpertBias = {"moe.moe_router_score_function=sigmoid",
                                              "moe.moe_router_enable_expert_bias=true",
                                              "moe.moe_router_bias_update_rate=0.05"};
// q/k norms (their weight gradients summed over TP: each rank saw its heads) and a head dim 12
// other than hidden / heads.
const std::vector<std::string> kQkNorm = {"model.qk_layernorm=true", "model.kv_channels=12"};

INSTANTIATE_TEST_SUITE_P(
    Layouts, TensorParallelInvariance,
    ::testing::Values(TpLayout{"tp2", 2, {}, tp(2, false)}, TpLayout{"tp2_sp", 2, {}, tp(2, true)},
                      TpLayout{"tp4", 4, kFourGroups, tp(4, false)},
                      TpLayout{"tp4_sp", 4, kFourGroups, tp(4, true)},
                      TpLayout{"tp2_dp2", 4, {}, tp(2, false)},
                      TpLayout{"tp2_dp2_sp", 4, {}, tp(2, true)},
                      TpLayout{"tp2_sp_expert_bias", 2, kExpertBias, tp(2, true)},
                      TpLayout{"tp2_dp2_expert_bias", 4, kExpertBias, tp(2, false)},
                      TpLayout{"tp2_comm_overlap", 2, {}, with_overlap(tp(2, false), 2)},
                      TpLayout{"tp4_sp_comm_overlap", 4, kFourGroups, with_overlap(tp(4, true), 2)},
                      TpLayout{"tp2_dp2_sp_comm_overlap", 4, {}, with_overlap(tp(2, true), 4)},
                      TpLayout{"tp2_sp_qk_norm", 2, kQkNorm, tp(2, true)},
                      TpLayout{"tp2_dp2_qk_norm", 4, kQkNorm, tp(2, false)}),
    [](const ::testing::TestParamInfo<TpLayout>& info) { return info.param.name; });

// Benchmark, not run by ctest (DISABLED_; run with --gtest_also_run_disabled_tests): tokens/s of
// the demo recipe (configs/demo.yaml, default corpus) with TP = MOEFOLD_BENCH_TP (default: the
// world size; the rest is DP), and the share of step time each rank spends in TP collectives.
// E.g. mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 build/tests/trainer/tensor_parallel_invariance
//      --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
TEST(TensorParallelBenchmark, DISABLED_DemoModelTokensPerSecond) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const char* tp_env = std::getenv("MOEFOLD_BENCH_TP");
  const int tp_size = tp_env ? std::atoi(tp_env) : world;
  constexpr int kWarmup = 1, kSteps = 4;
  auto recipe = load_recipe(
      std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml",
      {"parallel.tensor_model_parallel_size=" + std::to_string(tp_size),
       "parallel.expert_tensor_parallel_size=1", "training.blas_threads=1",
       "training.train_iters=" + std::to_string(kWarmup + kSteps), "training.eval_interval=0",
       "optimizer.lr_warmup_iters=1",
       "logging.run_dir=" + (std::filesystem::temp_directory_path() / "moefold-tp-bench").string()});
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  auto ctx = ParallelContext::create(recipe->parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto trainer = Trainer::create(*recipe, *ctx);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  double seconds = 0, tokens = 0;
  for (int i = 0; i < kWarmup + kSteps; ++i) {
    if (i == kWarmup) tp_communication_stats() = {};
    auto m = (*trainer)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    if (i < kWarmup) continue;
    seconds += m->step_seconds;
    tokens += static_cast<double>(m->tokens);
  }
  std::vector<double> share = {tp_communication_stats().seconds / seconds};
  std::vector<double> all(world);
  MPI_Gather(share.data(), 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("demo model, %d rank(s), TP %d: %.0f tokens/s over %d steps (%.3f s/step);"
                " TP communication share of step time per rank:",
                world, tp_size, tokens / seconds, kSteps, seconds / kSteps);
    for (double s : all) std::printf(" %.1f%%", 100 * s);
    std::printf("\n");
  }
}

}  // namespace
}  // namespace moefold::testing
