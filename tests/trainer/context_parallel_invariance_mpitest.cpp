// Context-parallel invariance (DESIGN.md): CP=2, CP=4, CP=2 × TP=2 (with and without sequence
// parallelism), CP=2 × DP=2, CP=2 × PP=2 and the experts folded onto EP over the same ranks
// (CP=2 with EP=2, CP=4 with EP=4, CP=2 × TP=2 + SP with EP=2, FSSDP over the CP ranks), also
// with the per-sequence balance loss, capacity dropping of both policies and q/k norms, give the per-step losses and gradient
// norms of one process on the same global batch (the tiny recipe: seq 16, dense and MoE layers,
// shared expert, aux and z losses). Each layout runs at the rank count it needs and is skipped
// at the others.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "model/model.h"
#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

using CpLayout = InvarianceLayout;

std::vector<std::string> cp(int size, int tp = 1, bool sequence_parallel = false, int ep = 1) {
  return {"parallel.context_parallel_size=" + std::to_string(size),
          "parallel.tensor_model_parallel_size=" + std::to_string(tp),
          "parallel.expert_model_parallel_size=" + std::to_string(ep),
          "parallel.expert_tensor_parallel_size=1",
          std::string("parallel.sequence_parallel=") + (sequence_parallel ? "true" : "false")};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<std::string> pipeline(std::vector<std::string> overrides) {
  overrides.push_back("parallel.pipeline_model_parallel_size=2");
  return overrides;
}

const std::vector<std::string> kSeqAux = {"moe.moe_router_load_balancing_type=seq_aux_loss"};
const std::vector<std::string> kDropProbs = {"moe.moe_expert_capacity_factor=0.75"};
const std::vector<std::string> kDropPositionSeqAux = {
    "moe.moe_expert_capacity_factor=0.75", "moe.moe_token_drop_policy=position",
    "moe.moe_router_load_balancing_type=seq_aux_loss"};

class ContextParallelInvariance : public ::testing::TestWithParam<CpLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("cp-invariance", 13); }
  static inline std::string dir_;
};

TEST_P(ContextParallelInvariance, MatchesSingleProcess) {
  const CpLayout& layout = GetParam();
  if (world_size() != layout.world) {
    GTEST_SKIP() << layout.name << " runs on " << layout.world << " ranks";
  }
  expect_matches_single_process(dir_, layout.name, layout.model, layout.parallel);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ContextParallelInvariance,
    ::testing::Values(CpLayout{"cp2", 2, {}, cp(2)}, CpLayout{"cp4", 4, {}, cp(4)},
                      CpLayout{"cp2_tp2", 4, {}, cp(2, 2)},
                      CpLayout{"cp2_tp2_sp", 4, {}, cp(2, 2, true)},
                      CpLayout{"cp2_dp2", 4, {}, cp(2)},
                      CpLayout{"cp2_ep2", 2, {}, cp(2, 1, false, 2)},
                      CpLayout{"cp4_ep4", 4, {}, cp(4, 1, false, 4)},
                      CpLayout{"cp2_tp2_sp_ep2", 4, {}, cp(2, 2, true, 2)},
                      CpLayout{"cp2_pp2", 4, {}, pipeline(cp(2))},
                      CpLayout{"cp2_seq_aux", 2, kSeqAux, cp(2)},
                      CpLayout{"cp2_ep2_drop_probs", 2, kDropProbs, cp(2, 1, false, 2)},
                      CpLayout{"cp4_ep4_drop_position_seq_aux", 4, kDropPositionSeqAux,
                               cp(4, 1, false, 4)},
                      CpLayout{"cp2_tp2_sp_ep2_drop_position_seq_aux", 4, kDropPositionSeqAux,
                               cp(2, 2, true, 2)},
                      CpLayout{"cp2_fssdp_drop_probs", 2, kDropProbs,
                               cp(2) + std::vector<std::string>{"parallel.moe_fssdp=true"}},
                      CpLayout{"cp2_tp2_sp_qk_norm", 4,
                               {"model.qk_layernorm=true", "model.kv_channels=12"},
                               cp(2, 2, true)},
                      CpLayout{"cp2_tp2_sp_ep2_recompute", 4, kSeqAux,
                               cp(2, 2, true, 2) + std::vector<std::string>{
                                                       "training.recompute_granularity=full"}}),
    [](const ::testing::TestParamInfo<CpLayout>& info) { return info.param.name; });

// Benchmark, not run by ctest (DISABLED_): activation memory per rank (MemoryStats peak above
// parameters and gradients, one micro-batch forward + backward) and step time of the demo model's
// shape (configs/demo.yaml, GPT-2 vocabulary) at seq S = MOEFOLD_BENCH_SEQ (default 8192), on
// one process and at CP = world size (MOEFOLD_BENCH_DENSE set: every layer dense;
// MOEFOLD_BENCH_RECOMPUTE set: full activation recomputation).
// E.g. mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 build/tests/trainer/context_parallel_invariance
//      --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
TEST(ContextParallelBenchmark, DISABLED_ActivationMemoryPerRank) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const char* seq_env = std::getenv("MOEFOLD_BENCH_SEQ");
  const bool dense = std::getenv("MOEFOLD_BENCH_DENSE") != nullptr;
  ModelConfig c;
  c.num_layers = 4;
  c.hidden_size = 256;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.ffn_hidden_size = 1024;
  c.vocab_size = 50257;
  c.seq_length = seq_env ? std::atoi(seq_env) : 8192;
  c.moe.num_experts = 8;
  c.moe.moe_ffn_hidden_size = 256;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, !dense, !dense, !dense};
  c.moe.moe_shared_expert_intermediate_size = 256;
  TokenBatch batch;
  batch.batch = 1;
  batch.seq = c.seq_length;
  std::mt19937 rng(3);
  for (int s = 0; s < c.seq_length; ++s) {
    batch.tokens.push_back(static_cast<int32_t>(rng() % c.vocab_size));
    batch.labels.push_back(static_cast<int32_t>(rng() % c.vocab_size));
    batch.loss_mask.push_back(1.0f);
  }
  ParallelConfig parallel;
  parallel.context_parallel_size = world;
  auto cp_ctx = ParallelContext::create(parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(cp_ctx.ok()) << cp_ctx.status();
  for (int pass = 0; pass < 2; ++pass) {
    const bool single = pass == 0;
    if (single && rank != 0) continue;
    Model model(c, single ? ParallelContext::single_process() : *cp_ctx);
    model.set_recompute_activations(std::getenv("MOEFOLD_BENCH_RECOMPUTE") != nullptr);
    model.init_parameters(1);
    auto stash = model.make_stash();
    LossScales scales;
    scales.lm = 1.0 / c.seq_length;
    const int64_t baseline = MemoryStats::current_bytes();
    MemoryStats::reset_peak();
    const auto start = std::chrono::steady_clock::now();
    model.forward(batch, scales, *stash);
    model.backward(*stash);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double mib = double(MemoryStats::peak_bytes() - baseline) / (1 << 20);
    std::printf("seq %d, CP %d, rank %d: activation peak %.1f MiB, forward+backward %.2f s\n",
                c.seq_length, single ? 1 : world, rank, mib, seconds);
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace moefold::testing
