// FSSDP (parallel.moe_fssdp, experts sharded over expert-DP = world): the workspace a micro-batch
// materialises holds only the local experts its tokens reach, not the whole layer. With a tied
// router (every logit equal) top-k sends every token to experts 0 .. k-1; the allocator
// statistics (MemoryStats) show exactly k experts' gate, up and down weights in the workspace.
#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <random>

#include "model/moe_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"

namespace moefold {
namespace {

constexpr int64_t kBatch = 2, kSeq = 4, kHidden = 16, kExperts = 4, kFfn = 16;

TEST(MoeFssdpWorkspace, HoldsOnlyTheExpertsTheTokensReach) {
  ParallelConfig parallel;
  parallel.moe_fssdp = true;
  auto ctx = ParallelContext::create(parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  for (int topk : {1, 2}) {
    SCOPED_TRACE("top-" + std::to_string(topk));
    ModelConfig config;
    config.num_layers = 2;
    config.hidden_size = kHidden;
    config.moe.num_experts = kExperts;
    config.moe.moe_ffn_hidden_size = kFfn;
    config.moe.moe_router_topk = topk;
    ParameterRegistry registry;
    auto workspace = std::make_shared<ExpertWorkspace>();
    MoeLayer layer(config, *ctx, 1, registry, workspace);
    registry.init(3);
    registry.find("layers/1/moe/router")->value.zero();
    const int64_t N = kBatch * kSeq;
    Tensor x = Tensor::empty({N, kHidden}), dy = Tensor::empty({N, kHidden});
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (Tensor* t : {&x, &dy})
      for (int64_t i = 0; i < t->numel(); ++i) t->data()[i] = normal(rng);
    Tensor y = Tensor::empty({N, kHidden}), dx = Tensor::empty({N, kHidden});
    MoeStash stash;
    layer.forward(x, {kBatch, kSeq, nullptr}, 1.0, y, false, stash);
    layer.backward_dx(dy, dx, stash);
    layer.backward_dw(stash);
    layer.finish_backward_dw(stash);
    EXPECT_EQ(workspace->w_gate.dim(0), topk);
    EXPECT_EQ(workspace->experts_gathered, topk);
    const int64_t before = MemoryStats::current_bytes();
    for (Tensor* t : {&workspace->w_gate, &workspace->w_up, &workspace->w_down,
                      &workspace->gate_memory, &workspace->up_memory, &workspace->down_memory})
      *t = Tensor();
    const int64_t materialised = MemoryStats::current_bytes() - before;
    EXPECT_EQ(-materialised, topk * 3 * kFfn * kHidden * int64_t{sizeof(float)});
  }
}

}  // namespace
}  // namespace moefold
