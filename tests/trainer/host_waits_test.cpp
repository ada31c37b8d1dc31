// How often a training step makes the host wait for the device (issue 16: "no host
// synchronisation per MoE layer beyond the token counts"), and how many device calls it makes.
// The trainer runs on the host-memory stand-in device (tests/tensor/host_device.h), which counts
// the calls at which a CUDA backend blocks the host (device→host copies, stream synchronisation
// and reductions returning a host number) and every backend call. The same code runs on a GPU,
// so the counts are the GPU's.
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

testing::HostMemoryDevice& device() {
  return dynamic_cast<testing::HostMemoryDevice&>(backend_for(Device::kCuda));
}

struct StepCounts {
  int64_t host_waits = -1, device_calls = -1;
  int64_t calls_while_waiting = -1;  // issued between a device→host copy's start and its wait
  double dropped_fraction = 0;  // of the step's assignments, over its MoE layers
};

// The counts of the second step (the first also builds workspaces and reads the data).
StepCounts counts_of_one_step(const std::string& name, const std::vector<std::string>& overrides) {
  const std::string dir = testing::fresh_temp_dir(name);
  std::vector<std::string> all = {"training.device=cuda"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  const Recipe recipe = testing::tiny_recipe(
      testing::write_tiny_dataset(dir, 60, 3), dir + "/run", all);
  const ParallelContext ctx = ParallelContext::single_process();
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return {};
  EXPECT_TRUE((*trainer)->train_step(0).ok());
  const int64_t waits = device().host_waits(), calls = device().device_calls();
  const int64_t overlapped = device().calls_while_copies_pending();
  const auto metrics = (*trainer)->train_step(1);
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  StepCounts counts{device().host_waits() - waits, device().device_calls() - calls,
                    device().calls_while_copies_pending() - overlapped};
  if (metrics.ok()) {
    for (const MoeLoadSummary& layer : metrics->moe) {
      counts.dropped_fraction += layer.dropped_fraction;
    }
  }
  return counts;
}

int64_t waits_of_one_step(const std::string& name, const std::vector<std::string>& overrides) {
  return counts_of_one_step(name, overrides).host_waits;
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

// The router's choices travel to the host while the device computes the shared expert (with
// one dispatch rank there is no exchange to hide it behind): the host's wait then finds the
// device busy. Without a shared expert nothing is issued in between.
TEST(HostWaits, TheSharedExpertComputesWhileTheHostWaitsForTheRouting) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const StepCounts shared = counts_of_one_step("host-waits-shared", {});  // the tiny recipe's
  const StepCounts plain =
      counts_of_one_step("host-waits-no-shared", {"moe.moe_shared_expert_intermediate_size=0"});
  std::cout << "device calls while the host waits for the routing: " << plain.calls_while_waiting
            << " without a shared expert, " << shared.calls_while_waiting << " with one\n";
  EXPECT_EQ(plain.calls_while_waiting, 0);
  EXPECT_GT(shared.calls_while_waiting, 0);
  EXPECT_EQ(shared.host_waits, plain.host_waits);
}

// Kernel launches and copies per step depend on the model and the layout, never on how many
// tokens a micro-batch has: a per-token (or per-row) device call costs microseconds on a GPU
// each, thousands per MoE layer (the expert dispatch once copied row by row). The same step at
// twice the sequence length, or with twice the sequences per micro-batch, makes exactly as many
// device calls, through the expert path (dispatch, combine, capacity dropping) on one rank.
TEST(DeviceCalls, AStepMakesAsManyDeviceCallsForTwiceTheTokens) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  for (const bool capacity : {false, true}) {
    std::vector<std::string> base = {"moe.moe_layer_freq=[1,1]"};
    if (capacity) base.push_back("moe.moe_expert_capacity_factor=1.0");
    std::vector<std::string> longer = base, more = base;
    longer.push_back("model.seq_length=32");
    more.insert(more.end(), {"training.micro_batch_size=4", "training.global_batch_size=16"});
    const StepCounts tokens16 = counts_of_one_step("device-calls-16", base);
    const StepCounts tokens32 = counts_of_one_step("device-calls-32", longer);
    const StepCounts sequences4 = counts_of_one_step("device-calls-4x16", more);
    std::cout << "device calls per step (capacity " << capacity << "): " << tokens16.device_calls
              << " at 2 sequences of 16 tokens per micro-batch, " << tokens32.device_calls
              << " at 2 of 32, " << sequences4.device_calls << " at 4 of 16\n";
    EXPECT_GT(tokens16.device_calls, 0);
    if (capacity) {  // the dropping path ran
      EXPECT_GT(tokens16.dropped_fraction, 0.0);
      EXPECT_GT(tokens32.dropped_fraction, 0.0);
    }
    EXPECT_EQ(tokens32.device_calls, tokens16.device_calls) << "capacity " << capacity;
    EXPECT_EQ(sequences4.device_calls, tokens16.device_calls) << "capacity " << capacity;
  }
}

}  // namespace
}  // namespace moefold
