// How often a training step makes the host wait for the device (issue 16: "no host
// synchronisation per MoE layer beyond the token counts"). The trainer runs on the host-memory
// stand-in device (tests/tensor/host_device.h), which counts the calls at which a CUDA backend
// blocks the host: device→host copies, stream synchronisation and reductions returning a host
// number. The same code runs on a GPU, so the counts are the GPU's.
#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tests/tensor/host_device.h"
#include "tests/trainer/tiny_run.h"
#include "trainer/trainer.h"

namespace moefold {
namespace {

int64_t waits() {
  return dynamic_cast<testing::HostMemoryDevice&>(backend_for(Device::kCuda)).host_waits();
}

// The host waits of the second step (the first also builds workspaces and reads the data).
int64_t waits_of_one_step(const std::string& name, const std::vector<std::string>& overrides) {
  const std::string dir = testing::fresh_temp_dir(name);
  std::vector<std::string> all = {"training.device=cuda"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const Recipe recipe = testing::tiny_recipe(
      testing::write_tiny_dataset(dir, 60, 3), dir + "/run", all);
  const ParallelContext ctx = ParallelContext::single_process();
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return -1;
  EXPECT_TRUE((*trainer)->train_step(0).ok());
  const int64_t before = waits();
  EXPECT_TRUE((*trainer)->train_step(1).ok());
  return waits() - before;
}

// The tiny recipe has 4 micro-batches per step. Each micro-batch waits once per MoE layer for its
// token counts; the step once for all micro-batches' losses and once for the gradient norm.
// Exactly: fewer would mean the counting missed a wait.
constexpr int64_t kMicroBatches = 4;
constexpr int64_t bound(int64_t moe_layers) { return kMicroBatches * moe_layers + 2; }

TEST(HostWaits, ADroplessStepWaitsForTokenCountsTheLossesAndTheNormOnly) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const int64_t n = waits_of_one_step("host-waits-softmax", {});
  std::cout << "host waits per step, softmax router with aux and z losses: " << n << "\n";
  EXPECT_EQ(n, bound(1));
}

TEST(HostWaits, AuxLossFreeBalancingAddsNoWaitPerLayer) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const int64_t n = waits_of_one_step(
      "host-waits-bias", {"moe.moe_layer_freq=[1,1]", "moe.moe_router_score_function=sigmoid",
                          "moe.moe_router_enable_expert_bias=true", "moe.moe_aux_loss_coeff=0"});
  std::cout << "host waits per step, two MoE layers, sigmoid router with expert bias: " << n
            << "\n";
  EXPECT_EQ(n, bound(2) + 1);  // + the metrics' one read of every layer's bias range
}

}  // namespace
}  // namespace moefold
