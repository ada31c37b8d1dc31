#include "optim/adamw.h"

#include <gtest/gtest.h>

#include "optim/grad_clip.h"
#include "optim/lr_schedule.h"

namespace moefold {
namespace {

OptimizerConfig hand_config() {
  OptimizerConfig c;
  c.adam_beta1 = 0.9f;
  c.adam_beta2 = 0.95f;
  c.adam_eps = 1e-8f;
  c.weight_decay = 0.1f;
  return c;
}

// Worked by hand: θ=1, lr 0.1, g=0.5 then g=−0.25.
//  t=1: m=0.05, v=0.0125, m̂=0.5, v̂=0.25 → θ = 1 − 0.1·(0.5/0.5 + 0.1·1) = 0.89
//  t=2: m=0.02, v=0.015, m̂=0.02/0.19, v̂=0.015/0.0975 → θ = 0.89 − 0.1·(0.268371 + 0.089)
TEST(AdamW, MatchesHandComputedSteps) {
  Tensor param = Tensor::from_vector({1}, {1.0f});
  Tensor grad = Tensor::from_vector({1}, {0.5f});
  AdamW adam(hand_config(), {{"w", param, grad, true}});
  adam.step(0.1);
  EXPECT_NEAR(param.data()[0], 0.89, 1e-6);
  grad.data()[0] = -0.25f;
  adam.step(0.1);
  EXPECT_NEAR(param.data()[0], 0.854263058, 1e-6);
  EXPECT_EQ(adam.steps(), 2);
  EXPECT_NEAR(adam.exp_avg(0).data()[0], 0.02, 1e-7);
  EXPECT_NEAR(adam.exp_avg_sq(0).data()[0], 0.015, 1e-7);
}

TEST(AdamW, NoWeightDecayOnNormWeights) {
  Tensor param = Tensor::from_vector({2}, {1.0f, -2.0f});
  Tensor grad = Tensor::from_vector({2}, {0.0f, 0.0f});
  AdamW adam(hand_config(), {{"final_norm", param, grad, false}});
  adam.step(0.5);
  EXPECT_FLOAT_EQ(param.data()[0], 1.0f);  // zero gradient and no decay: unchanged
  EXPECT_FLOAT_EQ(param.data()[1], -2.0f);
  Tensor decayed = Tensor::from_vector({1}, {2.0f});
  Tensor zero_grad = Tensor::from_vector({1}, {0.0f});
  AdamW adam2(hand_config(), {{"embed", decayed, zero_grad, true}});
  adam2.step(0.5);
  EXPECT_NEAR(decayed.data()[0], 2.0 - 0.5 * 0.1 * 2.0, 1e-6);
  EXPECT_EQ(adam2.state_bytes(), 8);
}

TEST(LearningRate, WarmupThenCosineLinearConstant) {
  OptimizerConfig c;
  c.lr = 1.0f;
  c.min_lr = 0.1f;
  c.lr_warmup_iters = 4;
  c.lr_decay_iters = 14;
  c.lr_decay_style = LrDecayStyle::kCosine;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 100), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(c, 3, 100), 1.0);
  EXPECT_NEAR(learning_rate(c, 4, 100), 1.0, 1e-7);
  EXPECT_NEAR(learning_rate(c, 9, 100), 0.1 + 0.9 * 0.5, 1e-7);  // p = 0.5
  EXPECT_NEAR(learning_rate(c, 14, 100), 0.1, 1e-7);
  EXPECT_NEAR(learning_rate(c, 50, 100), 0.1, 1e-7);                // clamped past the end
  c.lr_decay_style = LrDecayStyle::kLinear;
  EXPECT_NEAR(learning_rate(c, 9, 100), 1.0 - 0.9 * 0.5, 1e-7);
  c.lr_decay_style = LrDecayStyle::kConstant;
  EXPECT_NEAR(learning_rate(c, 9, 100), 1.0, 1e-7);
  c.lr_decay_iters = 0;  // falls back to train_iters
  c.lr_decay_style = LrDecayStyle::kLinear;
  EXPECT_NEAR(learning_rate(c, 12, 20), 1.0 - 0.9 * 0.5, 1e-7);
}

TEST(GradClip, NormAndScale) {
  Tensor p1 = Tensor::zeros({2}), g1 = Tensor::from_vector({2}, {3.0f, 0.0f});
  Tensor p2 = Tensor::zeros({1}), g2 = Tensor::from_vector({1}, {4.0f});
  std::vector<OptimTensor> tensors = {{"a", p1, g1, true}, {"b", p2, g2, false}};
  EXPECT_DOUBLE_EQ(grad_square_sum(tensors), 25.0);
  EXPECT_DOUBLE_EQ(clip_gradients(tensors, 5.0, 10.0), 1.0);  // below the limit: untouched
  EXPECT_FLOAT_EQ(g1.data()[0], 3.0f);
  const double scale = clip_gradients(tensors, 5.0, 1.0);
  EXPECT_NEAR(scale, 1.0 / (5.0 + 1e-6), 1e-12);
  EXPECT_NEAR(g1.data()[0], 3.0 / 5.0, 1e-6);
  EXPECT_NEAR(g2.data()[0], 4.0 / 5.0, 1e-6);
}

}  // namespace
}  // namespace moefold
