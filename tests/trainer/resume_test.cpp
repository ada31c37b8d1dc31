// Exact resume (DESIGN.md "Checkpoints"): 10 uninterrupted steps equal 5 steps, a checkpoint, a
// fresh trainer that loads it, and 5 more steps, bit for bit.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/tensor/host_device.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

void expect_bit_identical_resume(const std::string& name, std::vector<std::string> overrides) {
  const std::string dir = fresh_temp_dir(name);
  const std::string prefix = write_tiny_dataset(dir, 300, 3);
  overrides.push_back("training.train_iters=10");
  overrides.push_back("checkpoint.save=" + dir + "/save");
  const Recipe recipe = tiny_recipe(prefix, dir + "/run", overrides);
  const ParallelContext ctx = ParallelContext::single_process();

  const std::vector<StepRecord> straight = run_steps(recipe, ctx, 10);
  ASSERT_EQ(straight.size(), 10u);

  std::vector<StepRecord> resumed;
  {
    auto first = Trainer::create(recipe, ctx);
    ASSERT_TRUE(first.ok()) << first.status();
    for (int i = 0; i < 5; ++i) {
      auto m = (*first)->train_step(i);
      ASSERT_TRUE(m.ok()) << m.status();
      resumed.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
    }
    ASSERT_TRUE((*first)->save_checkpoint(5).ok());
  }
  auto second = Trainer::create(recipe, ctx);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->load_checkpoint(dir + "/save").ok());
  for (int i = 5; i < 10; ++i) {
    auto m = (*second)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    resumed.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
  }
  for (int i = 0; i < 10; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(resumed[i].lm_loss, straight[i].lm_loss);
    EXPECT_EQ(resumed[i].aux_loss, straight[i].aux_loss);
    EXPECT_EQ(resumed[i].z_loss, straight[i].z_loss);
    EXPECT_EQ(resumed[i].grad_norm, straight[i].grad_norm);
  }
}

TEST(Resume, BitIdenticalLossesAfterSaveAndLoad) { expect_bit_identical_resume("resume-test", {}); }

// Parameters, gradients and optimizer state on a device: the checkpoint stages them through the
// host (the host-memory stand-in device, tests/tensor/host_device.h; a GPU in cuda_tests' runs).
TEST(Resume, BitIdenticalOnADevice) {
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  expect_bit_identical_resume("resume-device", {"training.device=cuda"});
  expect_bit_identical_resume("resume-device-bf16",
                              {"training.device=cuda", "training.bf16=true"});
}

TEST(Resume, MismatchedModelIsOneClearErrorAndChangesNothing) {
  const std::string dir = fresh_temp_dir("resume-mismatch");
  const std::string prefix = write_tiny_dataset(dir, 300, 4);
  const Recipe recipe = tiny_recipe(prefix, dir + "/run", {"checkpoint.save=" + dir + "/save"});
  {
    auto trainer = Trainer::create(recipe, ParallelContext::single_process());
    ASSERT_TRUE(trainer.ok());
    ASSERT_TRUE((*trainer)->train_step(0).ok());
    ASSERT_TRUE((*trainer)->save_checkpoint(1).ok());
  }
  const Recipe other = tiny_recipe(prefix, dir + "/run", {"model.ffn_hidden_size=96"});
  auto trainer = Trainer::create(other, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok());
  const std::vector<float> before = (*trainer)->model().parameters()[0]->value.to_vector();
  const absl::Status status = (*trainer)->load_checkpoint(dir + "/save");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("ffn_hidden_size"), std::string::npos) << status;
  EXPECT_EQ((*trainer)->model().parameters()[0]->value.to_vector(), before);
}

}  // namespace
}  // namespace moefold::testing
