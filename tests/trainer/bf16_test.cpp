// bf16 mixed precision (training.bf16, MODEL.md "Mixed precision") on the CPU backend: bf16
// compute copies and activations, float32 masters, gradients, Adam state and checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tensor/kernel_math.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

const std::vector<std::string> kBf16 = {"training.bf16=true"};

// The bound for bf16 against float32 losses. Each bf16 rounding is a relative error of at most
// 2^-9; a forward pass through the tiny model's ~25 rounded tensors moves a per-token loss of
// ~5.5 by a few 1e-3 at most, and 50 optimizer steps on weights that differ by such amounts
// drift further but stay well below 2% (measured: under 0.5%). A wrong path (a float32 op on
// bf16 bits, a stale compute copy) is off by far more than 2% within a step.
constexpr double kLossBound = 0.02;

TEST(Bf16, FiftyStepsTrackFloat32) {
  const std::string dir = fresh_temp_dir("bf16-track");
  const std::string prefix = write_tiny_dataset(dir, 400, 21);
  const std::vector<std::string> steps = {"training.train_iters=50"};
  std::vector<std::string> mixed = steps;
  mixed.insert(mixed.end(), kBf16.begin(), kBf16.end());
  const ParallelContext ctx = ParallelContext::single_process();
  const auto f32 = run_steps(tiny_recipe(prefix, dir + "/f32", steps), ctx, 50);
  const auto bf16 = run_steps(tiny_recipe(prefix, dir + "/bf16", mixed), ctx, 50);
  ASSERT_EQ(f32.size(), 50u);
  ASSERT_EQ(bf16.size(), 50u);
  bool differs = false;
  for (size_t i = 0; i < f32.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_NEAR(bf16[i].lm_loss, f32[i].lm_loss, kLossBound * f32[i].lm_loss);
    EXPECT_TRUE(std::isfinite(bf16[i].grad_norm));
    differs |= bf16[i].lm_loss != f32[i].lm_loss;
  }
  EXPECT_TRUE(differs) << "bf16 ran in float32";
  EXPECT_LT(bf16.back().lm_loss, bf16.front().lm_loss - 0.3);  // it learns
}

// The model under bf16: compute copies are bf16 (the router's excepted), masters float32, and
// each step computes with the masters of the step before rounded to nearest even (MODEL.md).
TEST(Bf16, ComputeCopiesAreBf16AndMastersFloat32) {
  const std::string dir = fresh_temp_dir("bf16-copies");
  const std::string prefix = write_tiny_dataset(dir, 100, 22);
  auto trainer = Trainer::create(tiny_recipe(prefix, dir + "/run", kBf16),
                                 ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->train_step(0).ok());
  std::vector<std::vector<float>> masters;  // after step 1, what step 2 must compute with
  for (Parameter* p : (*trainer)->model().parameters()) masters.push_back(p->value.to_vector());
  ASSERT_TRUE((*trainer)->train_step(1).ok());
  int copies = 0;
  size_t index = 0;
  for (Parameter* p : (*trainer)->model().parameters()) {
    const std::vector<float>& master = masters[index++];
    EXPECT_EQ(p->value.dtype(), DType::kFloat32) << p->name();
    EXPECT_EQ(p->grad.dtype(), DType::kFloat32) << p->name();
    const bool router = p->name().find("/moe/router") != std::string::npos;
    EXPECT_EQ(p->compute.defined(), !router) << p->name();
    if (!p->compute.defined()) continue;
    ++copies;
    EXPECT_EQ(p->compute.dtype(), DType::kBFloat16);
    const std::vector<float> copy = p->compute.to_vector();  // as step 2 left it, not refreshed
    for (size_t i = 0; i < master.size(); ++i) {
      ASSERT_EQ(copy[i], bf16_bits_to_float(float_to_bf16_bits(master[i]))) << p->name();
    }
    EXPECT_NE(p->value.to_vector(), master) << p->name() << ": step 2 did not move it";
  }
  EXPECT_GT(copies, 10);
}

// Checkpoints hold float32 masters whatever the precision: a float32 checkpoint resumes in bf16
// and the reverse, and a bf16 run resumes bit-identically in bf16.
TEST(Bf16, ResumesAcrossPrecisions) {
  const std::string dir = fresh_temp_dir("bf16-resume");
  const std::string prefix = write_tiny_dataset(dir, 300, 23);
  const ParallelContext ctx = ParallelContext::single_process();
  const auto recipe = [&](const std::string& save, bool bf16) {
    std::vector<std::string> o = {"training.train_iters=8", "checkpoint.save=" + dir + save};
    if (bf16) o.push_back("training.bf16=true");
    return tiny_recipe(prefix, dir + "/run" + save, o);
  };
  const auto steps = [&](Trainer& t, int from, int to) {
    std::vector<StepRecord> out;
    for (int i = from; i < to; ++i) {
      auto m = t.train_step(i);
      EXPECT_TRUE(m.ok()) << m.status();
      if (m.ok()) out.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
    }
    return out;
  };
  for (const bool saved_in_bf16 : {false, true}) {
    SCOPED_TRACE(saved_in_bf16 ? "saved in bf16" : "saved in float32");
    const std::string save = saved_in_bf16 ? "/from-bf16" : "/from-f32";
    std::vector<StepRecord> straight;
    {
      auto first = Trainer::create(recipe(save, saved_in_bf16), ctx);
      ASSERT_TRUE(first.ok()) << first.status();
      straight = steps(**first, 0, 4);
      ASSERT_TRUE((*first)->save_checkpoint(4).ok());
      const auto more = steps(**first, 4, 8);
      straight.insert(straight.end(), more.begin(), more.end());
    }
    for (const bool resumed_in_bf16 : {false, true}) {
      SCOPED_TRACE(resumed_in_bf16 ? "resumed in bf16" : "resumed in float32");
      auto second = Trainer::create(recipe(save, resumed_in_bf16), ctx);
      ASSERT_TRUE(second.ok()) << second.status();
      ASSERT_TRUE((*second)->load_checkpoint(dir + save).ok());
      const auto resumed = steps(**second, 4, 8);
      ASSERT_EQ(resumed.size(), 4u);
      for (size_t i = 0; i < resumed.size(); ++i) {
        const StepRecord& want = straight[4 + i];
        if (resumed_in_bf16 == saved_in_bf16) {
          EXPECT_EQ(resumed[i].lm_loss, want.lm_loss);
          EXPECT_EQ(resumed[i].grad_norm, want.grad_norm);
        } else {
          EXPECT_NEAR(resumed[i].lm_loss, want.lm_loss, kLossBound * want.lm_loss);
        }
      }
    }
  }
}

}  // namespace
}  // namespace moefold::testing
