// The MoE layer folded over the ranks (attention TP = 2 splitting the routed tokens, or CP = 2
// giving each rank a non-contiguous load-balanced shard of every sequence, experts over
// EP = world) against the same layer on one process: output, input gradient, losses (the
// per-sequence balance loss) and router gradient equal, expert gradients equal the
// single-process slice; including a micro-batch of one token, so that one TP rank routes
// nothing, and capacity dropping of both policies.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "model/context_shard.h"
#include "model/moe_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"

namespace moefold {
namespace {

struct Case {
  int64_t batch, seq;
  float capacity_factor;
  const char* dispatcher;
  int cp = 1;  // the other factor of the token split is TP = 2 / CP
  const char* drop_policy = "probs";
};

ModelConfig layer_config(const Case& c) {
  ModelConfig config;
  config.num_layers = 2;
  config.hidden_size = 16;
  config.moe.num_experts = 4;
  config.moe.moe_ffn_hidden_size = 8;
  config.moe.moe_router_topk = 2;
  config.moe.moe_aux_loss_coeff = 0.1f;
  config.moe.moe_z_loss_coeff = 0.01f;
  config.moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  config.moe.moe_shared_expert_intermediate_size = 8;
  config.moe.moe_expert_capacity_factor = c.capacity_factor;
  config.moe.moe_token_dispatcher_type = c.dispatcher;
  config.moe.moe_token_drop_policy = std::string(c.drop_policy) == "position"
                                         ? TokenDropPolicy::kPosition
                                         : TokenDropPolicy::kProbs;
  return config;
}

Tensor random_tensor(std::vector<int64_t> shape, unsigned seed) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng);
  return t;
}

struct LayerRun {
  Tensor y, dx;
  double aux = 0, z = 0;
  ParameterRegistry registry;
};

// The rows of `full` (B·S, H) that CP rank `cp_rank` of `cp` holds, in shard order.
Tensor shard_rows(const Tensor& full, const Case& c, int cp_rank, int cp) {
  const std::vector<int32_t> positions = context_token_positions(c.batch, c.seq, cp_rank, cp);
  const int64_t n = static_cast<int64_t>(positions.size()), H = full.dim(1), per_seq = n / c.batch;
  Tensor shard = Tensor::empty({n, H});
  for (int64_t i = 0; i < n; ++i) {
    const float* row = full.data() + ((i / per_seq) * c.seq + positions[i]) * H;
    std::copy(row, row + H, shard.data() + i * H);
  }
  return shard;
}

// Runs the layer on this rank's CP shard; run.y and run.dx hold the shard's rows.
void run_layer(const ModelConfig& config, const ParallelContext& ctx, const Case& c,
               LayerRun& run) {
  const int64_t H = config.hidden_size;
  const int cp = ctx.coords.cp_size, cp_rank = ctx.coords.cp_rank;
  MoeLayer layer(config, ctx, 1, run.registry);
  run.registry.init(5);
  const Tensor x = shard_rows(random_tensor({c.batch * c.seq, H}, 1), c, cp_rank, cp);
  const Tensor dy = shard_rows(random_tensor({c.batch * c.seq, H}, 2), c, cp_rank, cp);
  const std::vector<int32_t> positions = context_token_positions(c.batch, c.seq, cp_rank, cp);
  run.y = Tensor::empty(x.shape());
  run.dx = Tensor::empty(x.shape());
  MoeStash stash;
  layer.forward(x, {c.batch, c.seq, positions.data()}, 1.0, run.y, false, stash);
  layer.backward_dx(dy, run.dx, stash);
  layer.backward_dw(stash);
  run.aux = stash.router.aux_loss;
  run.z = stash.router.z_loss;
}

class MoeFolding : public ::testing::TestWithParam<Case> {};

TEST_P(MoeFolding, MatchesOneProcess) {
  const Case c = GetParam();
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ParallelConfig parallel;
  parallel.tensor_model_parallel_size = 2 / c.cp;
  parallel.context_parallel_size = c.cp;
  parallel.expert_model_parallel_size = world;
  parallel.expert_tensor_parallel_size = 1;
  auto ctx = ParallelContext::create(parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const ModelConfig config = layer_config(c);

  LayerRun reference, folded;
  run_layer(config, ParallelContext::single_process(), c, reference);
  run_layer(config, *ctx, c, folded);

  const auto expect_close = [](const Tensor& a, const Tensor& b, double scale, const char* what) {
    ASSERT_EQ(a.numel(), b.numel()) << what;
    for (int64_t i = 0; i < a.numel(); ++i) {
      ASSERT_NEAR(a.data()[i], scale * b.data()[i], 2e-5 * (1 + std::abs(scale * b.data()[i])))
          << what << " element " << i;
    }
  };
  const int cp_rank = ctx->coords.cp_rank;
  expect_close(folded.y, shard_rows(reference.y, c, cp_rank, c.cp), 1.0, "y");
  expect_close(folded.dx, shard_rows(reference.dx, c, cp_rank, c.cp), 1.0, "dx");
  EXPECT_NEAR(folded.aux, reference.aux, 1e-6 * reference.aux);
  EXPECT_NEAR(folded.z, reference.z, 1e-6 * reference.z);
  // The router gradient is summed over TP in the layer, over CP with the dense gradients.
  Parameter* router = folded.registry.find("layers/1/moe/router");
  ctx->cp->all_reduce(std::span<float>(router->grad.data(), router->grad.numel()));
  expect_close(router->grad, reference.registry.find("layers/1/moe/router")->grad, 1.0, "router");
  // Each DP rank pair processed the same micro-batch here, so an expert saw it dp times.
  for (const char* name : {"layers/1/moe/experts/w_gate", "layers/1/moe/experts/w_down"}) {
    const Parameter* p = folded.registry.find(name);
    const Parameter* q = reference.registry.find(name);
    const int64_t slice = p->grad.numel(), offset = ctx->coords.ep_rank * slice;
    Tensor expected = Tensor::empty(p->grad.shape());
    for (int64_t i = 0; i < slice; ++i) expected.data()[i] = q->grad.data()[offset + i];
    expect_close(p->grad, expected, ctx->coords.dp_size, name);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MoeFolding,
                         ::testing::Values(Case{2, 6, 0.0f, "alltoall"},
                                           Case{2, 6, 0.75f, "alltoall"},
                                           Case{2, 6, 0.75f, "allgather"},
                                           Case{1, 1, 0.0f, "alltoall"},
                                           Case{1, 1, 1.0f, "allgather"},
                                           Case{2, 8, 0.0f, "alltoall", 2},
                                           Case{2, 8, 0.75f, "alltoall", 2},
                                           Case{3, 8, 0.5f, "allgather", 2, "position"},
                                           Case{2, 8, 0.75f, "alltoall", 1, "position"}));

}  // namespace
}  // namespace moefold
