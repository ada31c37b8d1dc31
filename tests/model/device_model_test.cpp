// The whole model on a device: with the default device set to the second device, every
// parameter, gradient and stash tensor must live there, and the losses and gradients must equal
// the CPU's (exactly on the host-memory stand-in, tests/tensor/host_device.h, whose math is the
// CPU backend's). This checks that model/ computes through the seam and moves data only where a
// device needs it (the routing decision's chosen experts to the host, the permutation back).
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

struct Result {
  double lm_loss_sum = 0, aux_loss = 0;
  std::vector<std::vector<float>> grads;
};

Result train_step_on(Device device) {
  set_default_device(device);
  const ModelConfig config = device_config();
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
  const MicroBatchStats stats = model.forward(mb, {1.0 / 12, 0.5}, *stash);
  model.backward(*stash);
  Result r{stats.lm_loss_sum, stats.aux_loss, {}};
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
  EXPECT_EQ(device.grads, cpu.grads);
}

}  // namespace
}  // namespace moefold
