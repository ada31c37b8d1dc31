// Expert-parallel invariance (DESIGN.md, MoE Parallel Folding): experts over EP (and their F over
// ETP), with the attention side data-parallel over the same ranks (DP = world, EDP = world /
// (EP·ETP)), give the per-step losses and gradient norms of one process on the same global batch,
// for both dispatchers, overlap chunks, dropless and capacity dropping, and the expert bias.
// Extreme routing (every token to the same experts, ranks that receive nothing) trains finitely.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

struct Case {
  std::string name;
  int ep = 1, etp = 1;
  std::vector<std::string> model;     // applied to the single process as well
  std::vector<std::string> parallel;  // the parallel run only (besides EP/ETP)
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<std::string> parallel_overrides(const Case& c) {
  std::vector<std::string> o = c.model;
  o.push_back("parallel.expert_model_parallel_size=" + std::to_string(c.ep));
  o.push_back("parallel.expert_tensor_parallel_size=" + std::to_string(c.etp));
  o.insert(o.end(), c.parallel.begin(), c.parallel.end());
  return o;
}

int world_size() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

class ExpertParallelInvariance : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    dir_ = (std::filesystem::temp_directory_path() /
            ("moefold-ep-invariance-np" + std::to_string(world_size())))
               .string();
    if (world_rank() == 0) {
      std::filesystem::remove_all(dir_);
      write_tiny_dataset(dir_, 300, 11);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    prefix_ = dir_ + "/tiny_text_document";
  }

  // Skips layouts that do not fit this world size.
  bool fits(const Case& c) const {
    const int world = world_size();
    return world % (c.ep * c.etp) == 0;
  }

  static inline std::string dir_, prefix_;
};

void expect_same_steps(const std::vector<StepRecord>& parallel,
                       const std::vector<StepRecord>& reference, int steps) {
  ASSERT_EQ(reference.size(), static_cast<size_t>(steps));
  ASSERT_EQ(parallel.size(), static_cast<size_t>(steps));
  for (int i = 0; i < steps; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_NEAR(parallel[i].lm_loss, reference[i].lm_loss, 1e-5 * reference[i].lm_loss);
    EXPECT_NEAR(parallel[i].aux_loss, reference[i].aux_loss, 1e-5 * reference[i].aux_loss);
    EXPECT_NEAR(parallel[i].z_loss, reference[i].z_loss, 1e-5 * reference[i].z_loss);
    EXPECT_NEAR(parallel[i].grad_norm, reference[i].grad_norm, 1e-4 * reference[i].grad_norm);
  }
}

TEST_P(ExpertParallelInvariance, MatchesSingleProcess) {
  const Case& c = GetParam();
  if (!fits(c)) GTEST_SKIP() << "needs a world divisible by EP·ETP = " << c.ep * c.etp;
  constexpr int kSteps = 5;
  const int rank = world_rank();
  const Recipe reference_recipe =
      tiny_recipe(prefix_, dir_ + "/single-" + std::to_string(rank), c.model);
  const std::vector<StepRecord> reference =
      run_steps(reference_recipe, ParallelContext::single_process(), kSteps);

  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/parallel", parallel_overrides(c));
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  ASSERT_EQ(ctx->coords.ep_size, c.ep);
  ASSERT_EQ(ctx->coords.etp_size, c.etp);
  const std::vector<StepRecord> parallel = run_steps(recipe, *ctx, kSteps);
  expect_same_steps(parallel, reference, kSteps);
  EXPECT_LT(parallel.back().lm_loss, parallel.front().lm_loss);  // and it learns
}

const std::vector<std::string> kDrop = {"moe.moe_expert_capacity_factor=0.75"};
const std::vector<std::string> kDropPosition = {"moe.moe_expert_capacity_factor=0.75",
                                                "moe.moe_token_drop_policy=position"};
const std::vector<std::string> kBias = {"moe.moe_router_score_function=sigmoid",
                                        "moe.moe_router_enable_expert_bias=true",
                                        "moe.moe_router_bias_update_rate=0.01"};
const std::string kAllGather = "moe.moe_token_dispatcher_type=allgather";
const std::string kChunks4 = "parallel.moe_a2a_overlap_chunks=4";

INSTANTIATE_TEST_SUITE_P(
    Layouts, ExpertParallelInvariance,
    ::testing::Values(Case{"ep2_alltoall", 2, 1, {}, {}},
                      Case{"ep2_alltoall_chunks4", 2, 1, {}, {kChunks4}},
                      Case{"ep2_allgather", 2, 1, {kAllGather}, {}},
                      Case{"ep2_allgather_chunks4_drop", 2, 1, kDrop, {kAllGather, kChunks4}},
                      Case{"ep2_alltoall_drop_probs", 2, 1, kDrop, {}},
                      Case{"ep2_alltoall_chunks4_drop_position", 2, 1, kDropPosition, {kChunks4}},
                      Case{"ep2_alltoall_expert_bias", 2, 1, kBias, {}},
                      Case{"ep4_alltoall", 4, 1, {}, {}},
                      Case{"ep4_alltoall_chunks4_drop", 4, 1, kDrop, {kChunks4}},
                      Case{"ep4_allgather_expert_bias", 4, 1, kBias, {kAllGather}},
                      Case{"ep2_etp2_alltoall", 2, 2, {}, {}},
                      Case{"ep2_etp2_alltoall_chunks4_drop", 2, 2, kDrop, {kChunks4}},
                      Case{"ep2_etp2_allgather_expert_bias", 2, 2, kBias, {kAllGather}}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Router weights zeroed before every step: all logits tie, so every token picks the lowest
// experts (top-1: expert 0 alone), and the ranks owning the other experts receive nothing.
std::vector<StepRecord> run_with_tied_router(const Recipe& recipe, const ParallelContext& ctx,
                                             int steps) {
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  std::vector<StepRecord> records;
  if (!trainer.ok()) return records;
  for (int i = 0; i < steps; ++i) {
    for (Parameter* p : (*trainer)->model().parameters()) {
      if (p->name().ends_with("moe/router")) p->value.zero();
    }
    auto m = (*trainer)->train_step(i);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) break;
    records.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
  }
  return records;
}

TEST_P(ExpertParallelInvariance, ExtremeRoutingTrainsWithoutHanging) {
  const Case& c = GetParam();
  if (!fits(c) || !c.model.empty()) GTEST_SKIP() << "one extreme-routing run per layout";
  constexpr int kSteps = 3;
  for (const std::string topk : {"1", "2"}) {
    SCOPED_TRACE("top-" + topk);
    std::vector<std::string> model = {"moe.moe_router_topk=" + topk};
    const Recipe reference_recipe =
        tiny_recipe(prefix_, dir_ + "/single-" + std::to_string(world_rank()), model);
    const std::vector<StepRecord> reference =
        run_with_tied_router(reference_recipe, ParallelContext::single_process(), kSteps);
    Case extreme = c;
    extreme.model = model;
    const Recipe recipe = tiny_recipe(prefix_, dir_ + "/parallel", parallel_overrides(extreme));
    auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    const std::vector<StepRecord> parallel = run_with_tied_router(recipe, *ctx, kSteps);
    for (const StepRecord& s : parallel) {
      EXPECT_TRUE(std::isfinite(s.lm_loss) && std::isfinite(s.aux_loss) &&
                  std::isfinite(s.grad_norm));
    }
    expect_same_steps(parallel, reference, kSteps);
  }
}

}  // namespace
}  // namespace moefold::testing
