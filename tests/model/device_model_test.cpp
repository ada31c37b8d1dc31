// The whole model on a device: with the default device set to the second device, every
// parameter, gradient and stash tensor must live there, and the losses and gradients must equal
// the CPU's (exactly on the host-memory stand-in, tests/tensor/host_device.h, whose math is the
// CPU backend's). This checks that model/ computes through the seam and moves data only where a
// device needs it (the routing decision's chosen experts to the host, the permutation back),
// and how often the host waits for the device.
#include <gtest/gtest.h>

#include <vector>

#include "model/model.h"
#include "tensor/ops.h"
#include "tests/model/gradient_check.h"
#include "tests/model/tiny_model_config.h"
#include "tests/tensor/host_device.h"

namespace moefold {
namespace {

// The shared tiny model, with capacity dropping so that the device path drops tokens too.
ModelConfig device_config() {
  ModelConfig c = testing::tiny_model_config();
  c.moe.moe_expert_capacity_factor = 1.0f;
  return c;
}

int64_t host_waits() {
  if (!has_backend(Device::kCuda)) return 0;
  return dynamic_cast<testing::HostMemoryDevice&>(backend_for(Device::kCuda)).host_waits();
}

struct Result {
  double lm_loss_sum = 0, aux_loss = 0, z_loss = 0;
  int64_t host_waits = 0;  // the stand-in device's (tests/tensor/host_device.h)
  std::vector<std::vector<float>> grads;
};

Result train_step_on(Device device, const ModelConfig& config = device_config()) {
  set_default_device(device);
  Model model(config, testing::test_context());
  model.init_parameters(7);
  TokenBatch mb{2, config.seq_length, {}, {}, {}};
  for (int t = 0; t < 2 * config.seq_length; ++t) {
    mb.tokens.push_back((5 * t + 1) % config.vocab_size);
    mb.labels.push_back((3 * t + 2) % config.vocab_size);
    mb.loss_mask.push_back(1.0f);
  }
  auto stash = model.make_stash();
  model.zero_grad();
  const int64_t before = host_waits();
  const MicroBatchStats stats = model.forward(mb, {1.0 / 12, 0.5}, *stash);
  model.backward(*stash);
  const int64_t waits = host_waits() - before;
  Result r{stats.host_lm_loss_sum(), stats.aux_loss, stats.z_loss, waits, {}};
  for (Parameter* p : model.parameters()) {
    EXPECT_EQ(p->value.device(), device) << p->name();
    EXPECT_EQ(p->grad.device(), device) << p->name();
    r.grads.push_back(p->grad.to_vector());
  }
  set_default_device(Device::kCpu);
  return r;
}

TEST(DeviceModel, ForwardAndBackwardOnTheDeviceEqualTheCpu) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const Result cpu = train_step_on(Device::kCpu);
  const Result device = train_step_on(Device::kCuda);
  EXPECT_EQ(device.lm_loss_sum, cpu.lm_loss_sum);
  EXPECT_EQ(device.aux_loss, cpu.aux_loss);
  EXPECT_EQ(device.z_loss, cpu.z_loss);
  EXPECT_EQ(device.grads, cpu.grads);
}

// The router waits for the device once per MoE layer (issue 16: "no host synchronisation per
// MoE layer beyond the token counts"): one forward and backward waits once per MoE layer (its
// routing decision) and not for the loss, and still equals the CPU.
void expect_one_wait_per_moe_layer(ModelConfig config) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  int moe_layers = 0;
  for (int m : config.moe.moe_layer_pattern) moe_layers += m;
  const Result cpu = train_step_on(Device::kCpu, config);
  const Result device = train_step_on(Device::kCuda, config);
  EXPECT_EQ(device.host_waits, moe_layers);  // the token counts; the loss stays on the device
  EXPECT_EQ(device.lm_loss_sum, cpu.lm_loss_sum);
  EXPECT_EQ(device.aux_loss, cpu.aux_loss);
  EXPECT_EQ(device.z_loss, cpu.z_loss);
  EXPECT_EQ(device.grads, cpu.grads);
}

TEST(RouterWaits, OnePerMoeLayerWhenDropless) {
  ModelConfig config = testing::tiny_model_config();
  config.moe.moe_layer_pattern = {1, 1};  // two MoE layers
  expect_one_wait_per_moe_layer(config);
}

TEST(RouterWaits, SigmoidSeqAuxGroupLimitedToo) {
  ModelConfig config = testing::tiny_model_config();
  config.moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  config.moe.moe_router_enable_expert_bias = true;
  config.moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  config.moe.moe_router_num_groups = 2;
  config.moe.moe_router_group_topk = 1;
  expect_one_wait_per_moe_layer(config);
}

TEST(RouterWaits, CapacityCopiesGatesInTheSameWait) {
  ModelConfig config = testing::tiny_model_config();
  config.moe.moe_expert_capacity_factor = 1.0f;
  expect_one_wait_per_moe_layer(config);
}

}  // namespace
}  // namespace moefold
