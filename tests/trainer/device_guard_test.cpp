// No host code may read or write device memory: on a GPU that is a crash (or garbage), and the
// host-memory stand-in device would hide it. Here the stand-in's memory is closed to the host
// outside backend calls (tests/tensor/guarded_arena.h), and whole trainer runs (training with
// each router and precision, checkpoint save and resume, evaluation) must not fault.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tensor/ops.h"
#include "tests/tensor/host_device.h"
#include "tests/trainer/tiny_run.h"
#include "trainer/trainer.h"

namespace moefold {
namespace {

bool use_guarded_device() {
  if (!testing::use_host_memory_device()) return false;
  dynamic_cast<testing::HostMemoryDevice&>(backend_for(Device::kCuda)).set_guarded(true);
  return true;
}

void train_save_resume(const std::string& name, const std::vector<std::string>& overrides) {
  const std::string dir = testing::fresh_temp_dir(name);
  std::vector<std::string> all = {"training.device=cuda", "checkpoint.save=" + dir + "/save",
                                  "training.eval_interval=2", "training.eval_iters=1"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const Recipe recipe =
      testing::tiny_recipe(testing::write_tiny_dataset(dir, 200, 3), dir + "/run", all);
  const ParallelContext ctx = ParallelContext::single_process();
  {
    auto trainer = Trainer::create(recipe, ctx);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    for (int i = 0; i < 2; ++i) ASSERT_TRUE((*trainer)->train_step(i).ok());
    ASSERT_TRUE((*trainer)->evaluate(1).ok());
    ASSERT_TRUE((*trainer)->save_checkpoint(2).ok());
  }
  auto trainer = Trainer::create(recipe, ctx);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->load_checkpoint(dir + "/save").ok());
  ASSERT_TRUE((*trainer)->train_step(2).ok());
}

TEST(DeviceGuard, AHostReadOfDeviceMemoryFaults) {
  if (!use_guarded_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const Tensor t = Tensor::empty({4}, DType::kFloat32, Device::kCuda);
  ops::fill(t, 1.0f);
  EXPECT_EQ(t.to_vector(), std::vector<float>(4, 1.0f));  // through the backend: fine
  EXPECT_DEATH({ volatile float x = t.data()[0]; (void)x; }, "host code touched device memory");
}

TEST(DeviceGuard, SoftmaxRouterWithCapacityFloat32) {
  if (!use_guarded_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  train_save_resume("guard-softmax", {"moe.moe_expert_capacity_factor=1.0"});
}

TEST(DeviceGuard, SigmoidRouterWithExpertBiasBf16) {
  if (!use_guarded_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  train_save_resume("guard-sigmoid-bf16",
                    {"training.bf16=true", "moe.moe_router_score_function=sigmoid",
                     "moe.moe_router_enable_expert_bias=true", "moe.moe_aux_loss_coeff=0"});
}

TEST(DeviceGuard, RecomputationAndDistributedOptimizer) {
  if (!use_guarded_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  train_save_resume("guard-recompute", {"training.recompute_granularity=full",
                                        "parallel.use_distributed_optimizer=true"});
}

}  // namespace
}  // namespace moefold
