// Load balancing works in training (issue 5). From a synthetic skewed start, where the router of
// every token prefers experts 0 and 1 of four (top-2, max/mean load near 2), the expert bias
// (sigmoid scores) and the aux_loss each bring the max/mean expert load below 1.2 within a bounded
// number of steps and keep it low, while the same training without either keeps the skew. Also:
// the bias moves once per step by the counts of the whole global batch, and the telemetry's
// dropped fraction is consistent with the capacity. Single process, tiny model, deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "model/router.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

constexpr int kSteps = 40;

class BalancingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fresh_temp_dir("balancing-test");
    prefix_ = write_tiny_dataset(dir_, 300, 11);
  }
  // The tiny recipe with a global batch of 32 sequences (4 micro-batches of 8: 512 tokens, so
  // the load of one step is not dominated by sampling noise), a constant learning rate and no
  // z-loss, plus `overrides`.
  static Recipe recipe(const std::vector<std::string>& overrides) {
    std::vector<std::string> all = {"training.train_iters=" + std::to_string(kSteps),
                                    "training.global_batch_size=32", "training.micro_batch_size=8",
                                    "optimizer.lr_decay_style=constant", "moe.moe_z_loss_coeff=0"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    return tiny_recipe(prefix_, dir_ + "/run", all);
  }
  static inline std::string dir_, prefix_;
};

// The skew. Hidden dimension 0 of every embedding row is set to 0.1 (five times the init scale),
// so the MoE layer's input of every token has a large positive component 0. The router's other
// weights are scaled up 10× so tokens still differ in their preferences, and its column 0 is
// +0.3 for experts 0 and 1 and −0.3 for experts 2 and 3: every token leans towards 0 and 1.
void skew_router(Model& model) {
  const int H = model.config().hidden_size, V = model.config().padded_vocab_size();
  Parameter* embed = model.registry().find("embed");
  Parameter* router = model.registry().find("layers/1/moe/router");  // [4, H]
  ASSERT_NE(embed, nullptr);
  ASSERT_NE(router, nullptr);
  for (int v = 0; v < V; ++v) embed->value.data()[v * H] = 0.1f;
  float* w = router->value.data();
  for (int i = 0; i < 4 * H; ++i) w[i] *= 10.0f;
  for (int e = 0; e < 4; ++e) w[e * H] = e < 2 ? 0.3f : -0.3f;
}

// Max/mean load of the MoE layer (layer 1) at each of `kSteps` steps from the skewed start.
std::vector<double> imbalance_trajectory(const Recipe& recipe) {
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  std::vector<double> imbalance;
  if (!trainer.ok()) return imbalance;
  skew_router((*trainer)->model());
  for (int i = 0; i < kSteps; ++i) {
    auto m = (*trainer)->train_step(i);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok() || m->moe.size() != 1) break;
    imbalance.push_back(m->moe[0].imbalance());
  }
  EXPECT_EQ(imbalance.size(), static_cast<size_t>(kSteps));
  return imbalance;
}

std::string describe(const std::vector<double>& imbalance) {
  std::string s;
  for (double v : imbalance) s += std::to_string(v).substr(0, 4) + " ";
  return s;
}

struct Trend {
  double start = 0;
  int first_balanced = -1;  // first step with max/mean < 1.2, -1 if none
  double last_mean = 0;     // mean max/mean over the last 10 steps
  double last_max = 0;      // largest max/mean over the last 10 steps
  double min_all = 0;       // smallest max/mean over all steps
};

Trend trend(const std::vector<double>& v) {
  Trend t;
  if (v.size() < 10) return t;
  t.start = v.front();
  const auto balanced = std::find_if(v.begin(), v.end(), [](double x) { return x < 1.2; });
  t.first_balanced = balanced == v.end() ? -1 : static_cast<int>(balanced - v.begin());
  t.last_mean = std::accumulate(v.end() - 10, v.end(), 0.0) / 10;
  t.last_max = *std::max_element(v.end() - 10, v.end());
  t.min_all = *std::min_element(v.begin(), v.end());
  return t;
}

TEST_F(BalancingTest, ExpertBiasRemovesTheSkewAndNothingElseDoes) {
  // A small learning rate: the bias does the balancing, not the optimizer.
  const std::vector<std::string> base = {"moe.moe_router_score_function=sigmoid",
                                         "moe.moe_router_load_balancing_type=none",
                                         "optimizer.lr=1.0e-4", "optimizer.min_lr=0"};
  std::vector<std::string> with_bias = base;
  with_bias.push_back("moe.moe_router_enable_expert_bias=true");
  with_bias.push_back("moe.moe_router_bias_update_rate=0.01");
  const auto biased = imbalance_trajectory(recipe(with_bias));
  const auto plain = imbalance_trajectory(recipe(base));
  const Trend b = trend(biased), p = trend(plain);
  EXPECT_GT(b.start, 1.8) << describe(biased);  // the skew is there at the start
  EXPECT_GE(b.first_balanced, 1) << describe(biased);
  EXPECT_LE(b.first_balanced, 35) << describe(biased);
  EXPECT_LT(b.last_mean, 1.15) << describe(biased);
  EXPECT_LT(b.last_max, 1.3) << describe(biased);
  EXPECT_GT(p.start, 1.8) << describe(plain);
  EXPECT_GT(p.min_all, 1.7) << describe(plain);  // without the bias the skew stays
}

TEST_F(BalancingTest, AuxLossRemovesTheSkewAndNothingElseDoes) {
  const std::vector<std::string> base = {"moe.moe_router_score_function=softmax",
                                         "optimizer.lr=3.0e-3"};
  std::vector<std::string> with_aux = base, without = base;
  with_aux.push_back("moe.moe_router_load_balancing_type=aux_loss");
  with_aux.push_back("moe.moe_aux_loss_coeff=1.0");
  without.push_back("moe.moe_router_load_balancing_type=none");
  const auto balanced = imbalance_trajectory(recipe(with_aux));
  const auto plain = imbalance_trajectory(recipe(without));
  const Trend a = trend(balanced), p = trend(plain);
  EXPECT_GT(a.start, 1.8) << describe(balanced);
  EXPECT_GE(a.first_balanced, 1) << describe(balanced);
  EXPECT_LE(a.first_balanced, 30) << describe(balanced);
  EXPECT_LT(a.last_mean, 1.2) << describe(balanced);
  EXPECT_LT(a.last_max, 1.35) << describe(balanced);
  EXPECT_GT(p.start, 1.8) << describe(plain);
  EXPECT_GT(p.min_all, 1.8) << describe(plain);
}

TEST_F(BalancingTest, BiasMovesOncePerStepByTheGlobalBatchCounts) {
  const float rate = 0.01f;
  auto trainer = Trainer::create(
      recipe({"moe.moe_router_score_function=sigmoid", "moe.moe_router_load_balancing_type=none",
              "moe.moe_router_enable_expert_bias=true", "moe.moe_router_bias_update_rate=0.01"}),
      ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  skew_router((*trainer)->model());
  const std::vector<Tensor*> biases = (*trainer)->model().expert_bias_buffers();
  ASSERT_EQ(biases.size(), 1u);
  std::vector<float> expected(4, 0.0f);
  for (int i = 0; i < 5; ++i) {
    auto m = (*trainer)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->moe.size(), 1u);
    const std::vector<int64_t>& counts = m->moe[0].tokens_per_expert;
    // Counts of every micro-batch of the step: 32 sequences of 16 tokens, top-2.
    EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}), 32 * 16 * 2);
    update_expert_bias(counts, rate, expected.data());
    EXPECT_EQ(biases[0]->to_vector(), expected) << "step " << i;
    EXPECT_EQ(m->moe[0].bias_min, *std::min_element(expected.begin(), expected.end()));
    EXPECT_EQ(m->moe[0].bias_max, *std::max_element(expected.begin(), expected.end()));
  }
}

TEST_F(BalancingTest, DroppedFractionFollowsTheCapacity) {
  // Capacity factor 1 on the skewed router: each micro-batch of 8·16 = 128 tokens gives each
  // expert cap = ceil(128·2/4) = 64 slots, 256 over the 4 micro-batches of the step, so at
  // least Σ_e max(0, c_e − 256) of the 1024 assignments are dropped.
  auto dropping = Trainer::create(recipe({"moe.moe_expert_capacity_factor=1.0"}),
                                  ParallelContext::single_process());
  ASSERT_TRUE(dropping.ok()) << dropping.status();
  skew_router((*dropping)->model());
  auto m = (*dropping)->train_step(0);
  ASSERT_TRUE(m.ok()) << m.status();
  int64_t excess = 0;
  for (int64_t c : m->moe[0].tokens_per_expert) excess += std::max<int64_t>(0, c - 256);
  EXPECT_GT(excess, 0);
  EXPECT_GE(m->moe[0].dropped_fraction, excess / 1024.0);
  auto dropless = Trainer::create(recipe({}), ParallelContext::single_process());
  ASSERT_TRUE(dropless.ok()) << dropless.status();
  skew_router((*dropless)->model());
  auto d = (*dropless)->train_step(0);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->moe[0].dropped_fraction, 0.0);
  EXPECT_EQ(d->moe[0].tokens_per_expert, m->moe[0].tokens_per_expert);  // counted before dropping
}

}  // namespace
}  // namespace moefold::testing
