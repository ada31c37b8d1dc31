#include "model/router.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "gradient_check.h"
#include "model/init.h"

namespace moefold {
namespace {

using testing::close;
using testing::numeric_derivative;
using testing::random_vector;

// A router over E experts. With identity = true, H = E and Wr = I, so the logits are the input.
struct RouterHarness {
  ModelConfig config;
  ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  std::unique_ptr<Router> router;
  RouterStash stash;

  RouterHarness(const MoeConfig& moe, int hidden, bool identity) {
    config.hidden_size = hidden;
    config.init_method_std = 0.5f;
    config.moe = moe;
    router = std::make_unique<Router>(config, ctx, 0, registry);
    registry.init(17);
    if (identity) {
      const int E = moe.num_experts;
      EXPECT_EQ(hidden, E);
      float* w = router->weight()->value.data();
      for (int i = 0; i < E * E; ++i) w[i] = (i / E == i % E) ? 1.0f : 0.0f;
    }
  }
  void route(const std::vector<float>& x, int batch, int seq) {
    x_ = Tensor::from_vector({static_cast<int64_t>(batch) * seq, config.hidden_size}, x);
    router->forward(x_, batch, seq, stash);
  }
  std::vector<int32_t> idx() const { return stash.idx; }
  std::vector<float> gates() const { return stash.gates.to_vector(); }
  Tensor x_;
};

MoeConfig moe_config(int experts, int topk) {
  MoeConfig moe;
  moe.num_experts = experts;
  moe.moe_ffn_hidden_size = 4;
  moe.moe_router_topk = topk;
  moe.moe_router_load_balancing_type = LoadBalancingType::kNone;
  return moe;
}

TEST(Router, SoftmaxPostTopkTiesToLowerIndex) {
  RouterHarness h(moe_config(4, 2), 4, true);
  h.route({1, 3, 2, 3, 0, std::log(3.0f), -1, 0}, 1, 2);
  EXPECT_EQ(h.idx(), (std::vector<int32_t>{1, 3, 1, 0}));
  const auto g = h.gates();
  EXPECT_NEAR(g[0], 0.5, 1e-6);
  EXPECT_NEAR(g[1], 0.5, 1e-6);
  EXPECT_NEAR(g[2], 0.75, 1e-6);
  EXPECT_NEAR(g[3], 0.25, 1e-6);
  EXPECT_EQ(h.stash.counts, (std::vector<int64_t>{1, 2, 0, 1}));
}

TEST(Router, SoftmaxPreGatesAreProbabilities) {
  MoeConfig moe = moe_config(4, 2);
  moe.moe_router_pre_softmax = true;
  RouterHarness h(moe, 4, true);
  h.route({0, std::log(3.0f), -1, 0}, 1, 1);
  const double sum = 5.0 + std::exp(-1.0);
  EXPECT_EQ(h.idx(), (std::vector<int32_t>{1, 0}));
  EXPECT_NEAR(h.gates()[0], 3.0 / sum, 1e-6);
  EXPECT_NEAR(h.gates()[1], 1.0 / sum, 1e-6);
}

TEST(Router, SigmoidBiasChoosesButDoesNotWeigh) {
  MoeConfig moe = moe_config(4, 2);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_enable_expert_bias = true;
  moe.moe_router_topk_scaling_factor = 2.5f;
  RouterHarness h(moe, 4, true);
  ASSERT_NE(h.router->expert_bias(), nullptr);
  EXPECT_EQ(h.router->expert_bias()->name(), "layers/0/moe/expert_bias");
  h.router->expert_bias()->value.data()[3] = 1.0f;
  h.route({0, 1, 2, -1}, 1, 1);
  EXPECT_EQ(h.idx(), (std::vector<int32_t>{3, 2}));  // σ(−1)+1 = 1.269 > σ(2) = 0.881
  const double s3 = 1 / (1 + std::exp(1.0)), s2 = 1 / (1 + std::exp(-2.0));
  EXPECT_NEAR(h.gates()[0], 2.5 * s3 / (s2 + s3), 1e-6);
  EXPECT_NEAR(h.gates()[1], 2.5 * s2 / (s2 + s3), 1e-6);
}

TEST(Router, SigmoidTopOneIsNotNormalised) {
  MoeConfig moe = moe_config(4, 1);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  RouterHarness h(moe, 4, true);
  h.route({0, 1, 2, -1}, 1, 1);
  EXPECT_EQ(h.idx(), (std::vector<int32_t>{2}));
  EXPECT_NEAR(h.gates()[0], 1 / (1 + std::exp(-2.0)), 1e-6);
}

TEST(Router, GroupLimitedKeepsBestGroups) {
  MoeConfig moe = moe_config(4, 2);
  const std::vector<float> z = {std::log(0.3f), std::log(0.3f), std::log(0.4f), std::log(1e-4f)};
  RouterHarness plain(moe, 4, true);
  plain.route(z, 1, 1);
  EXPECT_EQ(plain.idx(), (std::vector<int32_t>{2, 0}));
  // Two groups {0,1} and {2,3}; each group's score is the sum of its top k/gk = 2 scores:
  // 0.6 against 0.4001, so only group 0 is kept.
  moe.moe_router_num_groups = 2;
  moe.moe_router_group_topk = 1;
  RouterHarness grouped(moe, 4, true);
  grouped.route(z, 1, 1);
  EXPECT_EQ(grouped.idx(), (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(grouped.gates()[0], 0.5, 1e-6);
}

TEST(Router, AuxAndZLossHandWorked) {
  // N = 2 tokens, E = 2, k = 1. P = [.5 .5] and [.25 .75]; token 0 ties and picks expert 0,
  // token 1 picks expert 1: c = [1, 1]. aux = coeff·E/(k·N²)·Σ_e P_e·c_e = coeff·(2/4)·2.
  // z-loss = zcoeff·mean(lse²), lse = ln 2 and ln 4.
  MoeConfig moe = moe_config(2, 1);
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 0.1f;
  moe.moe_z_loss_coeff = 0.01f;
  RouterHarness h(moe, 2, true);
  h.route({0, 0, 0, std::log(3.0f)}, 1, 2);
  EXPECT_EQ(h.idx(), (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(h.stash.aux_loss, 0.1 * 1.0, 1e-7);
  const double ln2 = std::log(2.0), ln4 = std::log(4.0);
  EXPECT_NEAR(h.stash.z_loss, 0.01 * (ln2 * ln2 + ln4 * ln4) / 2, 1e-7);
}

TEST(Router, SeqAuxLossHandWorked) {
  // The same tokens as two sequences of one token: sequence 0 gives E/(k·1²)·(0.5·1) = 1,
  // sequence 1 gives 2·(0.75·1) = 1.5; averaged 1.25, times coeff.
  MoeConfig moe = moe_config(2, 1);
  moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  moe.moe_aux_loss_coeff = 0.1f;
  RouterHarness h(moe, 2, true);
  h.route({0, 0, 0, std::log(3.0f)}, 2, 1);
  EXPECT_NEAR(h.stash.aux_loss, 0.125, 1e-7);
  EXPECT_EQ(h.stash.z_loss, 0.0);
}

TEST(Router, SigmoidAuxLossUsesNormalisedScores) {
  // P = s / Σ s. z = [0, 0] → P = [.5, .5]; z = [0, ln 3]: s = [.5, .75] → P = [.4, .6].
  // Token 0 picks expert 0 (tie), token 1 expert 1: aux = coeff·(2/4)·(0.9 + 1.1).
  MoeConfig moe = moe_config(2, 1);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 1.0f;
  RouterHarness h(moe, 2, true);
  h.route({0, 0, 0, std::log(3.0f)}, 1, 2);
  EXPECT_NEAR(h.stash.aux_loss, 1.0, 1e-6);
}

TEST(Router, CapacityDropPolicies) {
  // E = 2, k = 1, N = 4, cf = 1: cap = ceil(4·1/2·1) = 2. Every token picks expert 0;
  // pre-softmax gates σ(a) for a = [3, 1, 3, 3].
  MoeConfig moe = moe_config(2, 1);
  moe.moe_router_pre_softmax = true;
  moe.moe_expert_capacity_factor = 1.0f;
  const std::vector<float> z = {3, 0, 1, 0, 3, 0, 3, 0};
  RouterHarness probs(moe, 2, true);
  probs.route(z, 1, 4);
  EXPECT_EQ(probs.stash.keep, (std::vector<uint8_t>{1, 0, 1, 0}));  // best gates, ties by token
  EXPECT_EQ(probs.stash.dropped, 2);
  EXPECT_EQ(probs.stash.counts, (std::vector<int64_t>{4, 0}));  // counted before dropping
  moe.moe_token_drop_policy = TokenDropPolicy::kPosition;
  RouterHarness position(moe, 2, true);
  position.route(z, 1, 4);
  EXPECT_EQ(position.stash.keep, (std::vector<uint8_t>{1, 1, 0, 0}));
  EXPECT_EQ(position.stash.dropped, 2);
}

TEST(Router, ExpertBiasUpdateFollowsSignOfLoadGap) {
  // c = [6, 2, 4, 4]: mean 4, so expert 0 (overloaded) goes down, 1 up, 2 and 3 stay.
  std::vector<float> bias = {0.5f, 0.0f, -0.25f, 0.0f};
  update_expert_bias({6, 2, 4, 4}, 0.01f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{0.49f, 0.01f, -0.25f, 0.0f}));
}

// L = Σ_kept w·g + aux_scale·(aux + z): backward against central differences in x and Wr.
// Returns the number of dropped assignments.
int64_t check_router_gradients(const MoeConfig& moe, int batch, int seq) {
  const int H = 8, E = moe.num_experts, k = moe.moe_router_topk, N = batch * seq;
  RouterHarness h(moe, H, false);
  if (h.router->expert_bias()) {
    const auto b = random_vector(E, 5, 0.1f);
    std::copy(b.begin(), b.end(), h.router->expert_bias()->value.data());
  }
  const double aux_scale = 0.7;
  const std::vector<float> w = random_vector(N * k, 3);
  Tensor x = Tensor::from_vector({N, H}, random_vector(N * H, 4));
  auto loss = [&]() {
    h.router->forward(x, batch, seq, h.stash);
    double l = 0.0;
    const float* g = h.stash.gates.data();
    for (int a = 0; a < N * k; ++a) l += h.stash.keep[a] ? static_cast<double>(w[a]) * g[a] : 0.0;
    return l + aux_scale * (h.stash.aux_loss + h.stash.z_loss);
  };
  loss();
  const std::vector<int32_t> idx = h.stash.idx;
  Tensor dgates = Tensor::from_vector({N, k}, w);
  Tensor dx = Tensor::zeros({N, H});
  h.router->weight()->grad.zero();
  h.router->backward_dx(dgates, aux_scale, dx, false, h.stash);
  h.router->backward_dw(h.stash);
  const std::vector<float> dx_v = dx.to_vector();
  const std::vector<float> dw_v = h.router->weight()->grad.to_vector();
  const double eps = 1e-3;
  for (int i = 0; i < N * H; ++i) {
    const double num = numeric_derivative(loss, x.data(), i, eps);
    EXPECT_TRUE(close(num, dx_v[i], 1e-2, 2e-4)) << "dx[" << i << "] " << num << " vs " << dx_v[i];
  }
  float* wr = h.router->weight()->value.data();
  for (int i = 0; i < E * H; ++i) {
    const double num = numeric_derivative(loss, wr, i, eps);
    EXPECT_TRUE(close(num, dw_v[i], 1e-2, 2e-4)) << "dWr[" << i << "] " << num << " vs " << dw_v[i];
  }
  double dx_max = 0.0, dw_max = 0.0;
  for (float v : dx_v) dx_max = std::max(dx_max, std::abs(static_cast<double>(v)));
  for (float v : dw_v) dw_max = std::max(dw_max, std::abs(static_cast<double>(v)));
  EXPECT_GT(dx_max, 1e-2);  // the check compared real, non-trivial gradients
  EXPECT_GT(dw_max, 1e-2);
  loss();
  EXPECT_EQ(h.stash.idx, idx) << "routing must not change under the perturbations";
  return h.stash.dropped;
}

TEST(RouterGradient, SoftmaxPostAuxAndZ) {
  MoeConfig moe = moe_config(8, 2);
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  moe.moe_z_loss_coeff = 0.05f;
  check_router_gradients(moe, 2, 6);
}

TEST(RouterGradient, SoftmaxPreSeqAux) {
  MoeConfig moe = moe_config(8, 3);
  moe.moe_router_pre_softmax = true;
  moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  moe.moe_z_loss_coeff = 0.05f;
  check_router_gradients(moe, 3, 4);
}

TEST(RouterGradient, SigmoidWithBiasAux) {
  MoeConfig moe = moe_config(8, 2);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_enable_expert_bias = true;
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  moe.moe_z_loss_coeff = 0.05f;
  check_router_gradients(moe, 2, 6);
}

TEST(RouterGradient, SigmoidTopOneSeqAux) {
  MoeConfig moe = moe_config(8, 1);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  check_router_gradients(moe, 2, 6);
}

TEST(RouterGradient, GroupLimitedWithScalingFactor) {
  MoeConfig moe = moe_config(8, 4);
  moe.moe_router_num_groups = 4;
  moe.moe_router_group_topk = 2;
  moe.moe_router_topk_scaling_factor = 2.5f;
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  check_router_gradients(moe, 2, 6);
}

TEST(RouterGradient, CapacityDroppingIgnoresDroppedGates) {
  MoeConfig moe = moe_config(8, 2);
  moe.moe_expert_capacity_factor = 0.5f;
  moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  moe.moe_aux_loss_coeff = 0.3f;
  EXPECT_GT(check_router_gradients(moe, 2, 6), 0);
}

}  // namespace
}  // namespace moefold
