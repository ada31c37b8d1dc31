// Pipeline-parallel invariance (DESIGN.md): 1F1B at PP=2 and PP=4, interleaved 1F1B at PP=2 with
// two virtual chunks, an uneven split, and PP=2 composed with DP=2 (plain and distributed
// optimizer with overlapped reduction), TP=2 with sequence parallelism, CP=2, EP=2 folded over
// DP=2, FSSDP over the DP ranks with interleaved micro-batches, and zero-bubble 1F1B (alone,
// interleaved, and composed with DP, TP+SP, EP and FSSDP), give the per-step losses and gradient
// norms of one process on the same global batch. The tiny recipe ties its embeddings, so the last
// stage's copy of the table is exercised throughout; one layout unties them. Each layout runs at
// the rank count it needs and is skipped at the others.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/pipeline_executor.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

using PpLayout = InvarianceLayout;

std::vector<std::string> pp(int size, int virtual_chunks = 0) {
  return {"parallel.pipeline_model_parallel_size=" + std::to_string(size),
          "parallel.virtual_pipeline_model_parallel_size=" + std::to_string(virtual_chunks)};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Four layers, MoE every other one: two per stage at PP=2, one at PP=4.
const std::vector<std::string> kFourLayers = {"model.num_layers=4", "moe.moe_layer_freq=[0,1,0,1]"};
const std::vector<std::string> kEightLayers = {"model.num_layers=8",
                                               "moe.moe_layer_freq=[0,1,0,1,0,1,0,1]"};
const std::vector<std::string> kExpertBias = {"moe.moe_router_score_function=sigmoid",
                                              "moe.moe_router_enable_expert_bias=true",
                                              "moe.moe_router_bias_update_rate=0.05"};

class PipelineParallelInvariance : public ::testing::TestWithParam<PpLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("pp-invariance", 17); }
  static inline std::string dir_;
};

TEST_P(PipelineParallelInvariance, MatchesSingleProcess) {
  const PpLayout& layout = GetParam();
  if (world_size() != layout.world) {
    GTEST_SKIP() << layout.name << " runs on " << layout.world << " ranks";
  }
  expect_matches_single_process(dir_, layout.name, layout.model, layout.parallel);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, PipelineParallelInvariance,
    ::testing::Values(
        PpLayout{"pp2", 2, {}, pp(2)},
        PpLayout{"pp2_untied", 2, {"model.untie_embeddings_and_output_weights=true"}, pp(2)},
        PpLayout{"pp2_four_layers", 2, kFourLayers, pp(2)},
        PpLayout{"pp2_interleaved", 2, kFourLayers, pp(2, 2)},
        PpLayout{"pp2_uneven", 2, kFourLayers,
                 pp(2) + std::vector<std::string>{"parallel.decoder_first_pipeline_num_layers=1"}},
        PpLayout{"pp2_expert_bias", 2, kExpertBias, pp(2)}, PpLayout{"pp4", 4, kFourLayers, pp(4)},
        PpLayout{"pp4_interleaved", 4, kEightLayers, pp(4, 2)}, PpLayout{"pp2_dp2", 4, {}, pp(2)},
        PpLayout{"pp2_dp2_distributed_overlap",
                 4,
                 {},
                 pp(2) + std::vector<std::string>{"parallel.use_distributed_optimizer=true",
                                                  "parallel.overlap_grad_reduce=true",
                                                  "parallel.overlap_param_gather=true"}},
        PpLayout{"pp2_interleaved_dp2", 4, kFourLayers, pp(2, 2)},
        PpLayout{"pp2_tp2_sp",
                 4,
                 {},
                 pp(2) + std::vector<std::string>{"parallel.tensor_model_parallel_size=2",
                                                  "parallel.expert_tensor_parallel_size=1",
                                                  "parallel.sequence_parallel=true"}},
        PpLayout{
            "pp2_cp2", 4, {}, pp(2) + std::vector<std::string>{"parallel.context_parallel_size=2"}},
        PpLayout{"pp2_dp2_ep2",
                 4,
                 {},
                 pp(2) + std::vector<std::string>{"parallel.expert_model_parallel_size=2",
                                                  "parallel.expert_tensor_parallel_size=1"}},
        PpLayout{"pp2_interleaved_dp2_fssdp", 4, kFourLayers,
                 pp(2, 2) + std::vector<std::string>{"parallel.moe_fssdp=true"}},
        PpLayout{"pp2_interleaved_recompute", 2, kFourLayers,
                 pp(2, 2) + std::vector<std::string>{"training.recompute_granularity=full"}},
        PpLayout{"pp2_zero_bubble", 2, kFourLayers + kExpertBias,
                 pp(2) + std::vector<std::string>{"parallel.zero_bubble_pipeline=true"}},
        PpLayout{"pp2_interleaved_zero_bubble", 2, kFourLayers,
                 pp(2, 2) + std::vector<std::string>{"parallel.zero_bubble_pipeline=true"}},
        PpLayout{"pp4_zero_bubble", 4, kFourLayers,
                 pp(4) + std::vector<std::string>{"parallel.zero_bubble_pipeline=true"}},
        PpLayout{"pp2_zero_bubble_dp2_tp_ep_fssdp_overlap",
                 4,
                 kFourLayers,
                 pp(2) + std::vector<std::string>{"parallel.zero_bubble_pipeline=true",
                                                  "parallel.use_distributed_optimizer=true",
                                                  "parallel.overlap_grad_reduce=true",
                                                  "parallel.expert_model_parallel_size=2",
                                                  "parallel.expert_tensor_parallel_size=1",
                                                  "parallel.moe_fssdp=true"}},
        PpLayout{"pp2_zero_bubble_tp2_sp",
                 4,
                 {},
                 pp(2) + std::vector<std::string>{"parallel.zero_bubble_pipeline=true",
                                                  "parallel.tensor_model_parallel_size=2",
                                                  "parallel.expert_tensor_parallel_size=1",
                                                  "parallel.sequence_parallel=true"}}),
    [](const ::testing::TestParamInfo<PpLayout>& info) { return info.param.name; });

// The step metrics of every MoE layer, the expert-bias range included, are the single
// process's on every rank, whichever pipeline stage holds the layer; the pipeline's idle share
// is reported under PP only.
TEST(PipelineMetrics, ExpertBiasRangeOfEveryStage) {
  if (world_size() != 2) GTEST_SKIP() << "runs on 2 ranks";
  const std::string dir = shared_tiny_corpus("pp-metrics", 29);
  const std::string prefix = tiny_prefix(dir);
  const auto last_metrics = [&](const Recipe& recipe, const ParallelContext& ctx) {
    auto trainer = Trainer::create(recipe, ctx);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    IterationMetrics last;
    for (int step = 0; step < 3 && trainer.ok(); ++step) {
      auto m = (*trainer)->train_step(step);
      EXPECT_TRUE(m.ok()) << m.status();
      if (m.ok()) last = *m;
    }
    return last;
  };
  const IterationMetrics single =
      last_metrics(tiny_recipe(prefix, dir + "/single-" + std::to_string(world_rank()),
                               kFourLayers + kExpertBias),
                   ParallelContext::single_process());
  const Recipe recipe = tiny_recipe(prefix, dir + "/pipeline", kFourLayers + kExpertBias + pp(2));
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const IterationMetrics pipeline = last_metrics(recipe, *ctx);
  ASSERT_EQ(single.moe.size(), 2u);
  ASSERT_EQ(pipeline.moe.size(), 2u);
  EXPECT_LT(single.pipeline_idle_fraction, 0);  // not reported without a pipeline
  EXPECT_GE(pipeline.pipeline_idle_fraction, 0);
  EXPECT_LT(pipeline.pipeline_idle_fraction, 1);
  EXPECT_GE(pipeline.dp_wait_seconds, 0);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_NE(single.moe[l].bias_max, single.moe[l].bias_min);
    EXPECT_EQ(pipeline.moe[l].bias_min, single.moe[l].bias_min) << "MoE layer " << l;
    EXPECT_EQ(pipeline.moe[l].bias_max, single.moe[l].bias_max) << "MoE layer " << l;
    EXPECT_EQ(pipeline.moe[l].tokens_per_expert, single.moe[l].tokens_per_expert);
  }
}

// Evaluation runs the forward-only schedule: the validation loss and token count under PP=2 (and
// DP at 4 ranks) before and after two steps are the single process's.
TEST(PipelineEvaluation, MatchesSingleProcess) {
  const int rank = world_rank();
  const std::string dir = shared_tiny_corpus("pp-eval", 23);
  const std::string prefix = tiny_prefix(dir);
  const auto evaluations = [&](const std::vector<std::string>& overrides,
                               const ParallelContext& ctx, const std::string& run) {
    auto trainer =
        Trainer::create(tiny_recipe(prefix, dir + "/" + run, kFourLayers + overrides), ctx);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    std::vector<EvalResult> out;
    if (!trainer.ok()) return out;
    for (int i = 0; i < 2; ++i) {
      auto eval = (*trainer)->evaluate(2);
      EXPECT_TRUE(eval.ok()) << eval.status();
      if (eval.ok()) out.push_back(*eval);
      for (int step = 2 * i; step < 2 * i + 2; ++step)
        EXPECT_TRUE((*trainer)->train_step(step).ok());
    }
    return out;
  };
  const std::vector<EvalResult> single =
      evaluations({}, ParallelContext::single_process(), "single-" + std::to_string(rank));
  const Recipe recipe = tiny_recipe(prefix, dir + "/pipeline", kFourLayers + pp(2));
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const std::vector<EvalResult> pipeline = evaluations(pp(2), *ctx, "pipeline");
  ASSERT_EQ(single.size(), 2u);
  ASSERT_EQ(pipeline.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_GT(single[i].tokens, 0);
    EXPECT_EQ(pipeline[i].tokens, single[i].tokens);
    EXPECT_NEAR(pipeline[i].loss, single[i].loss, 1e-5 * single[i].loss);
  }
}

// The executor's pooled stashes follow the schedule's bound on every stage: all micro-batches for
// all-forward-all-backward, PP − stage for 1F1B, peak_stashed_activations for interleaved, with
// 8 micro-batches on PP = world ranks (8 layers of the tiny model, 2 virtual chunks interleaved);
// the allocator's peak above the parameters is lower for 1F1B than for all-forward-all-backward.
TEST(PipelineExecutorMemory, StashesFollowTheScheduleBound) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  constexpr int kMicroBatches = 8;
  std::vector<int64_t> peak_bytes;  // above the parameters, per schedule
  for (const auto kind :
       {PipelineScheduleKind::kAllForwardAllBackward, PipelineScheduleKind::kOneForwardOneBackward,
        PipelineScheduleKind::kInterleaved}) {
    SCOPED_TRACE(pipeline_schedule_kind_name(kind));
    const int chunks = kind == PipelineScheduleKind::kInterleaved ? 2 : 1;
    const Recipe recipe =
        tiny_recipe("unused", "unused",
                    std::vector<std::string>{"model.num_layers=8", "model.vocab_size=300",
                                             "moe.moe_layer_freq=[0,1,0,1,0,1,0,1]"} +
                        pp(world, chunks == 2 ? 2 : 0));
    auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    Model model(recipe.model, *ctx);
    model.init_parameters(3);
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> token(0, 299);
    std::vector<TokenBatch> batches(kMicroBatches);
    for (TokenBatch& mb : batches) {
      mb.batch = 2;
      mb.seq = recipe.model.seq_length;
      for (int t = 0; t < mb.batch * mb.seq; ++t) {
        mb.tokens.push_back(token(rng));
        mb.labels.push_back(token(rng));
        mb.loss_mask.push_back(1.0f);
      }
    }
    const LossScales scales{1.0 / (2.0 * recipe.model.seq_length * kMicroBatches),
                            1.0 / kMicroBatches};
    const int64_t baseline = MemoryStats::current_bytes();  // parameters and gradients
    MemoryStats::reset_peak();
    PipelineExecutor executor(model, *ctx);
    for (int step = 0; step < 2; ++step) {  // the second step reuses the first one's stashes
      std::vector<int> before_backward;
      const std::vector<MicroBatchStats> stats =
          executor.run(kind, batches, &scales, [&](int mb) { before_backward.push_back(mb); });
      EXPECT_EQ(stats.size(), static_cast<size_t>(kMicroBatches * chunks));
      EXPECT_EQ(before_backward.size(), static_cast<size_t>(kMicroBatches * chunks));
    }
    const int stashes = executor.stashes_created();
    const PipelineScheduleShape shape{world, ctx->coords.pp_rank, kMicroBatches, chunks};
    EXPECT_EQ(stashes, peak_stashed_activations(kind, shape));
    if (kind == PipelineScheduleKind::kOneForwardOneBackward) {
      EXPECT_EQ(stashes, world - ctx->coords.pp_rank);
    }
    if (kind == PipelineScheduleKind::kAllForwardAllBackward) {
      EXPECT_EQ(stashes, kMicroBatches);
    }
    peak_bytes.push_back(MemoryStats::peak_bytes() - baseline);
  }
  // As the allocator sees it: 1F1B's PP − stage < M stashes take less memory than M of them.
  EXPECT_LT(peak_bytes[1], peak_bytes[0]);
}

// Benchmark, not run by ctest (DISABLED_; run with --gtest_also_run_disabled_tests): one step of
// the demo model (configs/demo.yaml, GPT-2 vocabulary, or MOEFOLD_BENCH_VOCAB tokens: the GPT-2
// LM head alone outweighs the last stage's layers several times) at PP=2 over M micro-batches of 4
// random sequences, all-forward-all-backward vs 1F1B vs interleaved 1F1B (2 chunks), printing per
// stage the idle fraction of the step (the bubble, next to the theoretical (PP-1)/(M+PP-1)), the
// stashes the executor held at once and the peak memory above the parameters and gradients.
//   mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 build/tests/trainer/pipeline_parallel_invariance
//          --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
TEST(PipelineBenchmark, DISABLED_DemoModelBubbleAndMemory) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world != 2) GTEST_SKIP() << "runs at PP=2 on 2 ranks";
  constexpr int kWarmup = 1, kSteps = 3;
  const char* vocab_env = std::getenv("MOEFOLD_BENCH_VOCAB");
  const int vocab = vocab_env ? std::atoi(vocab_env) : 50257;
  struct Case {
    const char* name;
    PipelineScheduleKind kind;
    int chunks;
    int micro_batches;
  };
  const Case cases[] = {
      {"all-forward-all-backward", PipelineScheduleKind::kAllForwardAllBackward, 0, 4},
      {"1F1B", PipelineScheduleKind::kOneForwardOneBackward, 0, 4},
      {"zero-bubble 1F1B", PipelineScheduleKind::kZeroBubble, 0, 4},
      {"interleaved 1F1B (2 chunks)", PipelineScheduleKind::kInterleaved, 2, 4},
      {"zero-bubble interleaved (2 chunks)", PipelineScheduleKind::kZeroBubble, 2, 4},
      {"all-forward-all-backward", PipelineScheduleKind::kAllForwardAllBackward, 0, 8},
      {"1F1B", PipelineScheduleKind::kOneForwardOneBackward, 0, 8},
      {"zero-bubble 1F1B", PipelineScheduleKind::kZeroBubble, 0, 8},
      {"interleaved 1F1B (2 chunks)", PipelineScheduleKind::kInterleaved, 2, 8},
      {"zero-bubble interleaved (2 chunks)", PipelineScheduleKind::kZeroBubble, 2, 8}};
  for (const Case& c : cases) {
    auto recipe = load_recipe(
        std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml",
        {"model.vocab_size=" + std::to_string(vocab), "parallel.pipeline_model_parallel_size=2",
         "parallel.virtual_pipeline_model_parallel_size=" + std::to_string(c.chunks)});
    ASSERT_TRUE(recipe.ok()) << recipe.status();
    auto ctx = ParallelContext::create(recipe->parallel, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    Model model(recipe->model, *ctx);
    model.init_parameters(1);
    const int B = recipe->training.micro_batch_size, S = recipe->model.seq_length;
    std::mt19937 rng(5);  // the same batches on both stages
    std::uniform_int_distribution<int32_t> token(0, vocab - 1);
    std::vector<TokenBatch> batches(c.micro_batches);
    for (TokenBatch& mb : batches) {
      mb.batch = B;
      mb.seq = S;
      for (int t = 0; t < B * S; ++t) {
        mb.tokens.push_back(token(rng));
        mb.labels.push_back(token(rng));
        mb.loss_mask.push_back(1.0f);
      }
    }
    const LossScales scales{1.0 / (double(B) * S * c.micro_batches), 1.0 / c.micro_batches};
    const int64_t baseline = MemoryStats::current_bytes();  // parameters and gradients
    MemoryStats::reset_peak();
    PipelineExecutor executor(model, *ctx);
    double idle = 0, step = 0;
    for (int i = 0; i < kWarmup + kSteps; ++i) {
      model.zero_grad();
      executor.run(c.kind, batches, &scales);
      if (i < kWarmup) continue;
      idle += executor.last_times().idle_fraction() / kSteps;
      step += executor.last_times().total / kSteps;
    }
    const int stashes = executor.stashes_created();
    const double mine[] = {idle, step, double(stashes),
                           double(MemoryStats::peak_bytes() - baseline) / (1 << 20)};
    double all[8];
    MPI_Gather(mine, 4, MPI_DOUBLE, all, 4, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      std::printf(
          "vocab %d PP=2 M=%d %-28s theoretical bubble %.3f | step %.2f s | per stage (idle, "
          "stashes, peak MiB above params): 0: %.3f %2.0f %7.1f  1: %.3f %2.0f %7.1f\n",
          vocab, c.micro_batches, c.name, 1.0 / (c.micro_batches + 1), all[1], all[0], all[2],
          all[3], all[4], all[6], all[7]);
    }
  }
}

}  // namespace
}  // namespace moefold::testing
