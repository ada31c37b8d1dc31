// Load-driven FSSDP in the MoE layer (model/moe_replicas.h): experts over EP = world, each rank
// routing its own micro-batch, with forced placements (no replicas, every expert everywhere,
// random plans; with experts that get no tokens and one expert that takes every token) and with
// the load-driven plan, against the same layer under plain EP on the same ranks and against one
// process that runs every rank's micro-batch in turn: outputs, input gradients and losses equal,
// the owners' expert gradients equal the single-process slice (the router gradient its sum),
// over several micro-batches that accumulate gradients. The same plan twice is bit-identical.
// Under bf16 (the gathers move the owners' bf16 compute copies) the same, to bf16 rounding.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "model/moe_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/expert_placement.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

constexpr int64_t kBatch = 2, kSeq = 6, kHidden = 16, kMicroBatches = 3;

enum class Plan { kLoadDriven, kNone, kEverywhere, kRandom };

struct Case {
  const char* name;
  Plan plan;
  int topk = 2;
  bool tied_router = false;  // every logit equal: the lowest experts take every token
  bool rematerialise = false;
  int chunks = 1;
  bool bf16 = false;  // bf16 compute copies and activations (training.bf16)
  bool recompute = false;  // forward again before backward, as training.recompute_granularity
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

ModelConfig layer_config(const Case& c, int world) {
  ModelConfig config;
  config.num_layers = 2;
  config.hidden_size = kHidden;
  config.moe.num_experts = 2 * world;
  config.moe.moe_ffn_hidden_size = 8;
  config.moe.moe_router_topk = c.topk;
  config.moe.moe_aux_loss_coeff = 0.1f;
  config.moe.moe_z_loss_coeff = 0.01f;
  config.moe.moe_shared_expert_intermediate_size = 8;
  return config;
}

Tensor random_tensor(std::vector<int64_t> shape, unsigned seed) {
  Tensor t = Tensor::empty(std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = normal(rng);
  return t;
}

// The forced placement of a case (the same on every rank), or none for the load-driven plan.
std::optional<ExpertPlacement> forced_placement(const Case& c, int64_t E, int W) {
  const std::vector<int> owner = ep_owners(E, W);
  std::vector<std::vector<int>> holders(E);
  std::mt19937 rng(17);
  for (int64_t e = 0; e < E; ++e) {
    holders[e] = {owner[e]};
    for (int r = 0; r < W; ++r) {
      if (c.plan == Plan::kEverywhere || (c.plan == Plan::kRandom && rng() % 2 == 0))
        holders[e].push_back(r);
    }
  }
  if (c.plan == Plan::kLoadDriven) return std::nullopt;
  return make_placement(owner, holders, W);
}

struct LayerRun {
  std::vector<Tensor> y, dx;  // per micro-batch this rank ran
  std::vector<double> aux, z;
  ParameterRegistry registry;
  int64_t replicas = 0;
  // bf16: the last micro-batch's slots (experts) and their gate compute copies, in float32.
  std::vector<int64_t> slot_experts;
  Tensor slot_gate;
};

// Runs kMicroBatches micro-batches; micro-batch m of rank r has inputs seeded by (m, r). `ranks`
// lists the ranks whose micro-batches this process runs (one process: all of them, in turn).
void run_layer(const ModelConfig& config, const ParallelContext& ctx, const Case& c,
               const std::vector<int>& ranks, LayerRun& run) {
  MoeLayer layer(config, ctx, 1, run.registry);
  run.registry.init(5);
  if (c.tied_router) run.registry.find("layers/1/moe/router")->value.zero();
  const DType act = c.bf16 ? DType::kBFloat16 : DType::kFloat32;
  if (c.bf16) run.registry.set_compute_dtype(act);
  run.registry.mark_values_changed();
  if (layer.replicas()) {
    layer.replicas()->force_placement(
        forced_placement(c, config.moe.num_experts, ctx.ep->size()));
  }
  const int64_t N = kBatch * kSeq;
  MoeStash stash;  // reused by every micro-batch, as the trainer does
  for (int m = 0; m < kMicroBatches; ++m) {
    for (int r : ranks) {
      const unsigned seed = static_cast<unsigned>(100 * m + 2 * r);
      const Tensor x = Tensor::empty({N, kHidden}, act), dy = Tensor::empty({N, kHidden}, act);
      ops::cast(x, random_tensor({N, kHidden}, seed));
      ops::cast(dy, random_tensor({N, kHidden}, seed + 1));
      Tensor y = Tensor::empty({N, kHidden}, act), dx = Tensor::empty({N, kHidden}, act);
      layer.forward(x, {kBatch, kSeq, nullptr}, 1.0, y, false, stash);
      if (c.recompute) {  // plans and routes again; the output is EP's all the same
        Tensor again = Tensor::empty({N, kHidden}, act);
        layer.forward(x, {kBatch, kSeq, nullptr}, 1.0, again, false, stash);
      }
      layer.backward_dx(dy, dx, stash);
      layer.backward_dw(stash);
      layer.finish_backward_dw(stash);
      run.y.push_back(Tensor::empty({N, kHidden}));  // compared in float32
      run.dx.push_back(Tensor::empty({N, kHidden}));
      ops::cast(run.y.back(), y);
      ops::cast(run.dx.back(), dx);
      run.aux.push_back(stash.router.aux_loss);
      run.z.push_back(stash.router.z_loss);
      run.replicas += stash.replicas.placement.replicas();
    }
  }
  if (c.bf16 && layer.replicas()) {
    run.slot_experts = stash.replicas.placement.slots[ctx.ep->rank()];
    run.slot_gate = Tensor::empty(stash.replicas.c_gate.shape());
    ops::cast(run.slot_gate, stash.replicas.c_gate);
  }
}

// Relative tolerance: float32 sums in other orders, or under bf16 one rounding of a bf16 output
// (2^-8) that summation order can move by an ulp.
double tolerance = 2e-5;

void expect_close(const Tensor& a, const Tensor& b, double scale, const std::string& what) {
  ASSERT_EQ(a.numel(), b.numel()) << what;
  for (int64_t i = 0; i < a.numel(); ++i) {
    ASSERT_NEAR(a.data()[i], scale * b.data()[i], tolerance * (1 + std::abs(scale * b.data()[i])))
        << what << " element " << i;
  }
}

ParallelConfig parallel_config(const Case& c, int world, int spare_slots) {
  ParallelConfig parallel;
  parallel.expert_model_parallel_size = world;
  parallel.expert_tensor_parallel_size = 1;
  parallel.moe_a2a_overlap_chunks = c.chunks;
  parallel.fssdp_spare_slots = spare_slots;
  parallel.fssdp_rematerialise = c.rematerialise;
  return parallel;
}

class MoeReplicas : public ::testing::TestWithParam<Case> {};

TEST_P(MoeReplicas, MatchesExpertParallelAndOneProcess) {
  const Case c = GetParam();
  tolerance = c.bf16 ? 1e-2 : 2e-5;
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto ctx = ParallelContext::create(parallel_config(c, world, 2), MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto ep_ctx = ParallelContext::create(parallel_config(c, world, 0), MPI_COMM_WORLD);
  ASSERT_TRUE(ep_ctx.ok()) << ep_ctx.status();
  const ModelConfig config = layer_config(c, world);

  std::vector<int> all(world);
  for (int r = 0; r < world; ++r) all[r] = r;
  LayerRun reference, ep, replicated, again;
  run_layer(config, ParallelContext::single_process(), c, all, reference);
  run_layer(config, *ep_ctx, c, {rank}, ep);
  run_layer(config, *ctx, c, {rank}, replicated);
  run_layer(config, *ctx, c, {rank}, again);
  if (c.plan == Plan::kEverywhere || c.plan == Plan::kRandom || c.tied_router) {
    EXPECT_GT(replicated.replicas, 0) << "the case should exercise replicas";
  }
  for (int m = 0; m < kMicroBatches; ++m) {
    const std::string at = "micro-batch " + std::to_string(m);
    const int one = m * world + rank;  // the reference ran every rank's micro-batch in turn
    expect_close(replicated.y[m], reference.y[one], 1.0, "y vs one process, " + at);
    expect_close(replicated.dx[m], reference.dx[one], 1.0, "dx vs one process, " + at);
    expect_close(replicated.y[m], ep.y[m], 1.0, "y vs EP, " + at);
    expect_close(replicated.dx[m], ep.dx[m], 1.0, "dx vs EP, " + at);
    EXPECT_NEAR(replicated.aux[m], reference.aux[one], 1e-6 * (1 + reference.aux[one]));
    EXPECT_NEAR(replicated.z[m], reference.z[one], 1e-6 * (1 + reference.z[one]));
    // The same plan and inputs twice: bit-identical.
    for (int64_t i = 0; i < replicated.y[m].numel(); ++i) {
      ASSERT_EQ(replicated.y[m].data()[i], again.y[m].data()[i]) << at;
      ASSERT_EQ(replicated.dx[m].data()[i], again.dx[m].data()[i]) << at;
    }
  }
  if (c.bf16) {  // every slot computed with its owner's compute copy, bit for bit
    const Tensor& full = reference.registry.find("layers/1/moe/experts/w_gate")->compute_value();
    Tensor expected = Tensor::empty(full.shape());
    ops::cast(expected, full);
    ASSERT_FALSE(replicated.slot_experts.empty());
    const int64_t per_expert = expected.numel() / config.moe.num_experts;
    for (size_t i = 0; i < replicated.slot_experts.size(); ++i) {
      const float* want = expected.data() + replicated.slot_experts[i] * per_expert;
      const float* got = replicated.slot_gate.data() + i * per_expert;
      for (int64_t j = 0; j < per_expert; ++j) ASSERT_EQ(got[j], want[j]) << "slot " << i;
    }
  }
  Parameter* router = replicated.registry.find("layers/1/moe/router");
  ctx->ep->all_reduce(std::span<float>(router->grad.data(), router->grad.numel()));
  expect_close(router->grad, reference.registry.find("layers/1/moe/router")->grad, 1.0, "router");
  for (const char* name : {"layers/1/moe/experts/w_gate", "layers/1/moe/experts/w_up",
                           "layers/1/moe/experts/w_down"}) {
    const Parameter* p = replicated.registry.find(name);
    const Parameter* q = reference.registry.find(name);
    const int64_t slice = p->grad.numel(), offset = ctx->coords.ep_rank * slice;
    Tensor expected = Tensor::empty(p->grad.shape());
    for (int64_t i = 0; i < slice; ++i) expected.data()[i] = q->grad.data()[offset + i];
    expect_close(p->grad, expected, 1.0, name);
    expect_close(p->grad, ep.registry.find(name)->grad, 1.0, std::string(name) + " vs EP");
    const Parameter* twice = again.registry.find(name);
    for (int64_t i = 0; i < slice; ++i) ASSERT_EQ(p->grad.data()[i], twice->grad.data()[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Plans, MoeReplicas,
    ::testing::Values(Case{"load_driven", Plan::kLoadDriven},
                      Case{"load_driven_tied_top1", Plan::kLoadDriven, 1, true},
                      Case{"no_replicas", Plan::kNone},
                      Case{"everywhere", Plan::kEverywhere},
                      Case{"everywhere_rematerialise_chunks3", Plan::kEverywhere, 2, false, true,
                           3},
                      Case{"random", Plan::kRandom},
                      Case{"random_tied_top2", Plan::kRandom, 2, true},
                      Case{"everywhere_tied_top1", Plan::kEverywhere, 1, true},
                      Case{"everywhere_bf16", Plan::kEverywhere, 2, false, false, 1, true},
                      Case{"random_rematerialise_bf16", Plan::kRandom, 2, false, true, 1, true},
                      Case{"load_driven_tied_top1_recompute", Plan::kLoadDriven, 1, true, false,
                           1, false, true},
                      Case{"random_rematerialise_recompute", Plan::kRandom, 2, false, true, 2,
                           false, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace moefold
