// Each layer's backward (backward_dx + backward_dw) against central finite differences of
// L = Σ w ⊙ y for a fixed random w.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <numeric>

#include "gradient_check.h"
#include "model/attention.h"
#include "model/mlp.h"
#include "model/moe_layer.h"
#include "model/transformer_layer.h"

namespace moefold {
namespace {

using testing::close;
using testing::numeric_derivative;
using testing::random_vector;

ModelConfig small_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.ffn_hidden_size = 12;
  c.vocab_size = 50;
  c.make_vocab_size_divisible_by = 16;
  c.init_method_std = 0.3f;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, 1};
  c.moe.moe_aux_loss_coeff = 0.1f;
  c.moe.moe_z_loss_coeff = 0.01f;
  return c;
}

double weighted_sum(const Tensor& y, const std::vector<float>& w) {
  const float* p = y.data();
  double s = 0.0;
  for (size_t i = 0; i < w.size(); ++i) s += static_cast<double>(p[i]) * w[i];
  return s;
}

// Compares analytic gradients with central differences: every element of dx and of each
// parameter (the test sizes are small).
void expect_gradients(const std::function<double()>& loss, Tensor& x, const std::vector<float>& dx,
                      ParameterRegistry& registry, double rtol, double atol, double eps = 1e-3) {
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double num = numeric_derivative(loss, x.data(), i, eps);
    EXPECT_TRUE(close(num, dx[i], rtol, atol)) << "dx[" << i << "] " << num << " vs " << dx[i];
  }
  for (const auto& p : registry.parameters()) {
    const std::vector<float> g = p->grad.to_vector();
    double g_max = 0.0;
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      const double num = numeric_derivative(loss, p->value.data(), i, eps);
      EXPECT_TRUE(close(num, g[i], rtol, atol))
          << p->name() << "[" << i << "] " << num << " vs " << g[i];
      g_max = std::max(g_max, std::abs(static_cast<double>(g[i])));
    }
    EXPECT_GT(g_max, 1e-3) << p->name() << " has a trivial gradient";
  }
}

void check_attention_gradients(const ModelConfig& config) {
  const ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  Attention attention(config, ctx, 1, registry);
  registry.init(3);
  EXPECT_EQ(registry.parameters()[0]->name(), "layers/1/attn/wq");
  for (const auto& p : registry.parameters()) {  // norm weights off their initial ones
    if (p->init != InitKind::kOnes) continue;
    const std::vector<float> w = random_vector(p->value.numel(), 5, 0.5f);
    for (int64_t i = 0; i < p->value.numel(); ++i) p->value.data()[i] = 1.0f + w[i];
  }
  const int B = 2, S = 5, N = B * S, H = config.hidden_size;
  std::vector<int32_t> positions(N);
  for (int t = 0; t < N; ++t) positions[t] = t % S;
  Tensor a = Tensor::from_vector({N, H}, random_vector(N * H, 1));
  Tensor y = Tensor::zeros({N, H});
  const Tensor y0 = Tensor::from_vector({N, H}, random_vector(N * H, 9));
  const std::vector<float> w = random_vector(N * H, 2);
  AttentionStash stash;
  auto loss = [&]() {
    std::copy(y0.data(), y0.data() + N * H, y.data());  // accumulate onto a residual
    attention.forward(a, positions.data(), B, S, y, true, stash);
    return weighted_sum(y, w);
  };
  loss();
  Tensor dy = Tensor::from_vector({N, H}, w);
  Tensor da = Tensor::zeros({N, H});
  attention.backward_dx(dy, positions.data(), da, stash);
  attention.backward_dw(stash);
  expect_gradients(loss, a, da.to_vector(), registry, 1e-2, 3e-4, 1e-2);
}

TEST(AttentionLayer, BackwardMatchesFiniteDifferences) { check_attention_gradients(small_config()); }

// Head dim 6 (kv_channels) with hidden 16: q/k/v are 24 and 12 wide; q/k norms over each head.
TEST(AttentionLayer, QkLayernormWithOwnHeadDimMatchesFiniteDifferences) {
  ModelConfig config = small_config();
  config.kv_channels = 6;
  config.qk_layernorm = true;
  ParameterRegistry registry;
  Attention attention(config, testing::test_context(), 1, registry);
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& p : registry.parameters()) {
    names.push_back(p->name());
    shapes.push_back(p->layout.global_shape);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"layers/1/attn/wq", "layers/1/attn/wk",
                                              "layers/1/attn/wv", "layers/1/attn/wo",
                                              "layers/1/attn/q_norm", "layers/1/attn/k_norm"}));
  EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{24, 16}, {12, 16}, {12, 16}, {16, 24},
                                                        {6}, {6}}));
  EXPECT_FALSE(registry.parameters()[4]->weight_decay);
  check_attention_gradients(config);
}

TEST(MlpLayer, BackwardMatchesFiniteDifferences) {
  const ModelConfig config = small_config();
  const ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  Mlp mlp(config, ctx, "layers/0/mlp/", config.ffn_hidden_size, registry);
  registry.init(4);
  const int N = 6, H = config.hidden_size;
  Tensor x = Tensor::from_vector({N, H}, random_vector(N * H, 1));
  Tensor y = Tensor::zeros({N, H});
  const std::vector<float> w = random_vector(N * H, 2);
  MlpStash stash;
  auto loss = [&]() {
    mlp.forward(x, y, false, stash);
    return weighted_sum(y, w);
  };
  loss();
  Tensor dy = Tensor::from_vector({N, H}, w);
  Tensor dx = Tensor::from_vector({N, H}, std::vector<float>(N * H, 0.5f));
  mlp.backward_dx(dy, dx, true, stash);  // accumulates onto 0.5
  mlp.backward_dw(stash);
  std::vector<float> dx_v = dx.to_vector();
  for (float& v : dx_v) v -= 0.5f;
  expect_gradients(loss, x, dx_v, registry, 1e-2, 3e-4);
}

void check_moe_layer(ModelConfig config, double aux_scale) {
  const ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  MoeLayer moe(config, ctx, 1, registry);
  registry.init(5);
  const int B = 2, S = 4, N = B * S, H = config.hidden_size;
  Tensor x = Tensor::from_vector({N, H}, random_vector(N * H, 1));
  Tensor y = Tensor::zeros({N, H});
  const std::vector<float> w = random_vector(N * H, 2);
  MoeStash stash;
  auto loss = [&]() {
    moe.forward(x, {B, S}, aux_scale, y, false, stash);
    return weighted_sum(y, w) + aux_scale * (stash.router.aux_loss + stash.router.z_loss);
  };
  loss();
  const std::vector<int32_t> idx = stash.router.idx;
  Tensor dy = Tensor::from_vector({N, H}, w);
  Tensor dx = Tensor::zeros({N, H});
  moe.backward_dx(dy, dx, stash);
  moe.backward_dw(stash);
  // eps 3e-3: the float32 forward's rounding (about 1e-7 of Σ|y·w|, over 128 outputs) divided
  // by 2·eps must stay below atol; at 1e-3 it did not for every expert weight (the truncation
  // error is still O(eps²) and small, and routing is checked unchanged below).
  expect_gradients(loss, x, dx.to_vector(), registry, 1e-2, 3e-4, 3e-3);
  loss();
  EXPECT_EQ(stash.router.idx, idx) << "routing changed under the perturbations";
}

TEST(MoeLayer, BackwardMatchesFiniteDifferences) {
  check_moe_layer(small_config(), 0.8);
}

TEST(MoeLayer, SharedExpertBackward) {
  ModelConfig config = small_config();
  config.moe.moe_shared_expert_intermediate_size = 6;
  check_moe_layer(config, 0.8);
}

TEST(MoeLayer, CapacityDroppingBackward) {
  ModelConfig config = small_config();
  config.moe.moe_expert_capacity_factor = 0.75f;
  config.moe.moe_token_drop_policy = TokenDropPolicy::kPosition;
  check_moe_layer(config, 0.8);
}

TEST(MoeLayer, OutputIsGateWeightedSumOfExperts) {
  // y[t] = Σ_j g[t,j]·expert_j(x[t]), computed here from the weights in double.
  ModelConfig config = small_config();
  const ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  MoeLayer moe(config, ctx, 1, registry);
  registry.init(6);
  const int N = 5, H = config.hidden_size, F = config.moe.moe_ffn_hidden_size, k = 2;
  Tensor x = Tensor::from_vector({N, H}, random_vector(N * H, 1));
  Tensor y = Tensor::zeros({N, H});
  MoeStash stash;
  moe.forward(x, {1, N}, 1.0, y, false, stash);
  const float* wg = registry.find("layers/1/moe/experts/w_gate")->value.data();
  const float* wu = registry.find("layers/1/moe/experts/w_up")->value.data();
  const float* wd = registry.find("layers/1/moe/experts/w_down")->value.data();
  const float* xs = x.data();
  for (int t = 0; t < N; ++t) {
    std::vector<double> ref(H, 0.0);
    for (int j = 0; j < k; ++j) {
      const int e = stash.router.idx[t * k + j];
      const double g = stash.router.gates.data()[t * k + j];
      for (int f = 0; f < F; ++f) {
        double gate = 0, up = 0;
        for (int i = 0; i < H; ++i) {
          gate += static_cast<double>(wg[(e * F + f) * H + i]) * xs[t * H + i];
          up += static_cast<double>(wu[(e * F + f) * H + i]) * xs[t * H + i];
        }
        const double act = gate / (1 + std::exp(-gate)) * up;
        for (int o = 0; o < H; ++o) ref[o] += g * act * wd[(e * H + o) * F + f];
      }
    }
    for (int o = 0; o < H; ++o) EXPECT_NEAR(y.data()[t * H + o], ref[o], 1e-5);
  }
}

}  // namespace
}  // namespace moefold
