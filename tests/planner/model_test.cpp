// The planner's memory and time models on small recipes: parameter counts equal the model's,
// each memory lever moves what it should, the pipeline simulation reproduces the schedules'
// known bubbles, and impossible layouts get `moefold train`'s errors.
#include <gtest/gtest.h>

#include "model/model.h"
#include "planner/memory_model.h"
#include "planner/pipeline_sim.h"
#include "planner/plan.h"
#include "planner_test_util.h"
#include "trainer/config_validate.h"

namespace moefold {
namespace {

using testing::small_recipe;

const ClusterSpec& cpu_cluster() {
  static const ClusterSpec c = testing::cluster_file("this_machine.yaml");
  return c;
}

Workload workload(const std::vector<std::string>& overrides, int world, double imbalance = 1) {
  auto w = make_workload(small_recipe(overrides), world, imbalance);
  if (!w.ok()) throw std::runtime_error(std::string(w.status().message()));
  return *w;
}

TEST(PlannerCounts, ParametersAsTheModelCountsThem) {
  for (const bool untied : {false, true}) {
    Recipe r = small_recipe({untied ? "model.untie_embeddings_and_output_weights=true"
                                    : "model.untie_embeddings_and_output_weights=false"});
    Model model(r.model, ParallelContext::single_process());
    EXPECT_EQ(total_parameters(r.model), double(model.parameter_count()));
    EXPECT_EQ(active_parameters(r.model), double(model.active_parameter_count()));
  }
}

TEST(PlannerCounts, StageParametersSumToTheModel) {
  const Workload one = workload({}, 1);
  const StageParameters whole = stage_parameters(one, 0);
  EXPECT_EQ(whole.total(), total_parameters(one.model));
  // TP2 x EP2 x PP2 on 8 ranks: per rank, sharded pieces add back up to the model.
  const Workload w = workload({"parallel.tensor_model_parallel_size=2",
                               "parallel.expert_model_parallel_size=2",
                               "parallel.expert_tensor_parallel_size=1",
                               "parallel.pipeline_model_parallel_size=2",
                               "model.untie_embeddings_and_output_weights=true"},
                              8);
  double experts = 0;
  for (int s = 0; s < 2; ++s) experts += stage_parameters(w, s).experts * 2;  // x EP
  EXPECT_EQ(experts, whole.experts);
}

TEST(PlannerMemory, EachLeverMovesItsTerm) {
  const ClusterSpec& c = cpu_cluster();
  const MemoryBreakdown dp = worst_stage_memory(workload({}, 2), c);
  const MemoryBreakdown dist =
      worst_stage_memory(workload({"parallel.use_distributed_optimizer=true"}, 2), c);
  EXPECT_DOUBLE_EQ(dist.optimizer_state, dp.optimizer_state / 2);
  EXPECT_DOUBLE_EQ(dist.parameters, dp.parameters);
  EXPECT_DOUBLE_EQ(dp.optimizer_state_distributed, dist.optimizer_state);

  const MemoryBreakdown ep = worst_stage_memory(
      workload({"parallel.expert_model_parallel_size=2"}, 2), c);
  const MemoryBreakdown fssdp = worst_stage_memory(
      workload({"parallel.moe_fssdp=true", "parallel.use_distributed_optimizer=true"}, 2), c);
  EXPECT_LT(ep.parameters, dp.parameters);
  EXPECT_LT(fssdp.parameters, dp.parameters);

  const MemoryBreakdown recompute =
      worst_stage_memory(workload({"training.recompute_granularity=full"}, 1), c);
  const MemoryBreakdown plain = worst_stage_memory(workload({}, 1), c);
  EXPECT_LT(recompute.activations, plain.activations / 2);

  // 1F1B: the first stage holds PP stashes of its layers, the last one.
  const Workload pp = workload({"parallel.pipeline_model_parallel_size=2"}, 2);
  const MemoryBreakdown first = stage_memory(pp, c, 0), last = stage_memory(pp, c, 1);
  EXPECT_EQ(first.stashes_in_flight, 2);
  EXPECT_EQ(last.stashes_in_flight, 1);
  EXPECT_DOUBLE_EQ(first.activations,
                   2 * c.compute_bytes * chunk_stash_elements(pp, 0, 0));
  EXPECT_GT(last.loss_workspace, 0);
  EXPECT_EQ(first.loss_workspace, 0);
}

TEST(PlannerMemory, RoutingSkewGrowsTheStragglersExpertBuffers) {
  const Workload even = workload({"parallel.expert_model_parallel_size=2"}, 2, 1.0);
  const Workload skewed = workload({"parallel.expert_model_parallel_size=2"}, 2, 1.5);
  EXPECT_DOUBLE_EQ(skewed.expert_rows(), 1.5 * even.expert_rows());
  EXPECT_GT(layer_stash_elements(skewed, 1), layer_stash_elements(even, 1));
  EXPECT_EQ(layer_stash_elements(skewed, 0), layer_stash_elements(even, 0));  // dense layer
  // A capacity factor caps what a rank can receive.
  const Workload capped = workload({"parallel.expert_model_parallel_size=2",
                                    "moe.moe_expert_capacity_factor=1.2"},
                                   2, 1.5);
  EXPECT_FLOAT_EQ(capped.imbalance, 1.2f);
}

std::vector<std::vector<ChunkCost>> equal_costs(int pp, int chunks, ChunkCost cost) {
  return std::vector<std::vector<ChunkCost>>(pp, std::vector<ChunkCost>(chunks, cost));
}

double makespan(const Workload& w, ChunkCost cost) {
  auto finish = simulate_pipeline(w, equal_costs(w.pp, w.chunks, cost),
                                  std::vector<double>(w.pp, 0.0), 0);
  EXPECT_TRUE(finish.ok()) << finish.status().message();
  return *std::max_element(finish->begin(), finish->end());
}

TEST(PlannerPipeline, BubblesOfTheSchedules) {
  // 4 stages, 8 micro-batches per rank (global batch 8 of micro-batch 1, DP 1).
  const std::vector<std::string> base = {"parallel.pipeline_model_parallel_size=4",
                                         "training.micro_batch_size=1",
                                         "model.num_layers=8", "moe.moe_layer_freq=1"};
  const Workload one_f_one_b = workload(base, 4);
  ASSERT_EQ(one_f_one_b.micro_batches, 8);
  // 1F1B with F = 1, B + W = 2: (M + PP − 1)·(F + B + W).
  EXPECT_DOUBLE_EQ(makespan(one_f_one_b, {1, 1, 1}), (8 + 3) * 3);
  std::vector<std::string> interleaved = base;
  interleaved.push_back("parallel.virtual_pipeline_model_parallel_size=2");
  // Interleaved: each chunk costs half, the bubble shrinks to (PP − 1)/V of a micro-batch.
  EXPECT_DOUBLE_EQ(makespan(workload(interleaved, 4), {0.5, 0.5, 0.5}), 8 * 3 + 3 * 3 / 2.0);
  std::vector<std::string> zero_bubble = base;
  zero_bubble.push_back("parallel.zero_bubble_pipeline=true");
  const double zb = makespan(workload(zero_bubble, 4), {1, 1, 1});
  EXPECT_LT(zb, (8 + 3) * 3);
  EXPECT_GE(zb, 8 * 3);
  // One stage: no bubble at all.
  EXPECT_DOUBLE_EQ(makespan(workload({}, 1), {1, 1, 1}), workload({}, 1).micro_batches * 3);
}

TEST(PlannerTime, SkewSlowsTheMoeStraggler) {
  const ClusterSpec& c = cpu_cluster();
  auto even = make_plan(small_recipe({"parallel.expert_model_parallel_size=2"}), c, 2, {1.0});
  auto skewed = make_plan(small_recipe({"parallel.expert_model_parallel_size=2"}), c, 2, {2.0});
  ASSERT_TRUE(even.ok() && skewed.ok());
  EXPECT_NEAR(skewed->compute.experts, 2 * even->compute.experts, 1e-12);
  EXPECT_GT(skewed->step_seconds, even->step_seconds);
  EXPECT_EQ(skewed->compute.gemm, even->compute.gemm);
}

TEST(PlannerTime, MfuAndThroughputAgree) {
  const ClusterSpec& c = cpu_cluster();
  auto plan = make_plan(small_recipe(), c, 2, {});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const Workload& w = plan->workload;
  EXPECT_DOUBLE_EQ(plan->tokens_per_s_per_gpu,
                   8.0 * 32 / (plan->step_seconds * 2));
  EXPECT_DOUBLE_EQ(plan->mfu, model_flops_per_step(w.model, 8) / plan->step_seconds /
                                  (2 * c.peak_flops));
  EXPECT_NEAR(plan->step_seconds,
              plan->compute.total() + plan->bubble_seconds + plan->dp_seconds +
                  plan->optimizer_seconds,
              1e-9 * plan->step_seconds);
}

TEST(PlannerErrors, ImpossibleLayoutsFailAsTrainDoes) {
  const ClusterSpec& c = cpu_cluster();
  for (const auto& [overrides, world] : std::vector<std::pair<std::vector<std::string>, int>>{
           {{"parallel.expert_model_parallel_size=3"}, 3},
           {{"parallel.tensor_model_parallel_size=3"}, 3},
           {{"parallel.pipeline_model_parallel_size=3"}, 3},
           {{"training.global_batch_size=6"}, 4},
       }) {
    const Recipe r = small_recipe(overrides);
    const absl::Status train = validate_recipe_for_world(r, world);
    ASSERT_FALSE(train.ok());
    auto plan = make_plan(r, c, world, {});
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status(), train);
  }
  EXPECT_FALSE(make_plan(small_recipe(), c, 2, {0.5}).ok());  // imbalance below 1
  // The model's own limits, as the trainer's start-up checks them (Model::validate).
  const Recipe odd_ffn = small_recipe({"parallel.tensor_model_parallel_size=2",
                                       "model.ffn_hidden_size=127"});
  ASSERT_TRUE(validate_recipe_for_world(odd_ffn, 2).ok());
  auto plan = make_plan(odd_ffn, c, 2, {});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(),
            "ffn_hidden_size 127 is not divisible by tensor_model_parallel_size 2");
}

}  // namespace
}  // namespace moefold
