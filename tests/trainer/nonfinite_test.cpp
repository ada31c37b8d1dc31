// training.nonfinite: stop names the first non-finite tensor (the loss, or which gradient);
// skip drops the step's update (parameters, optimizer state untouched) and stops after
// nonfinite_max_consecutive_skips steps in a row.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "tests/tensor/host_device.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<std::vector<float>> parameter_values(Trainer& trainer) {
  std::vector<std::vector<float>> out;
  for (const Parameter* p : trainer.model().parameters()) out.push_back(p->value.to_vector());
  return out;
}

Parameter* find_parameter(Trainer& trainer, const std::string& part) {
  for (Parameter* p : trainer.model().parameters())
    if (p->name().find(part) != std::string::npos) return p;
  return nullptr;
}

void expect_stop_names_the_routers_gradient(const std::string& name,
                                            const std::vector<std::string>& overrides) {
  const std::string dir = fresh_temp_dir(name);
  const Recipe recipe = tiny_recipe(write_tiny_dataset(dir, 200, 3), dir + "/run", overrides);
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Parameter* router = find_parameter(**trainer, "router");
  ASSERT_NE(router, nullptr);
  // A NaN appears in the router's gradient only: the loss stays finite.
  (*trainer)->model().set_grad_ready_hook([router](std::span<Parameter* const> params) {
    for (Parameter* p : params)
      if (p == router) p->grad.data()[0] = kNaN;
  });
  const auto before = parameter_values(**trainer);
  const absl::Status status = (*trainer)->train_step(0).status();
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("iteration 1: the router's gradient is not finite (first in " +
                                  router->name()),
            std::string::npos)
      << status;
  EXPECT_EQ(parameter_values(**trainer), before);
}

TEST(Nonfinite, StopNamesTheRoutersGradient) {
  expect_stop_names_the_routers_gradient("nonfinite-router", {});
}

// The gradients live on the device: the search for the first non-finite one reads them back.
TEST(Nonfinite, StopNamesTheRoutersGradientOnADevice) {
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  expect_stop_names_the_routers_gradient("nonfinite-router-device", {"training.device=cuda"});
}

TEST(Nonfinite, SkipLeavesTheStateAndStopsAfterTheCap) {
  const std::string dir = fresh_temp_dir("nonfinite-skip");
  const Recipe recipe =
      tiny_recipe(write_tiny_dataset(dir, 300, 4), dir + "/run",
                  {"training.nonfinite=skip", "training.nonfinite_max_consecutive_skips=2"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->train_step(0).ok());
  Parameter* weight = find_parameter(**trainer, "layers/0/");
  ASSERT_NE(weight, nullptr);
  const float kept = weight->value.data()[0];
  weight->value.data()[0] = kNaN;  // every step is now non-finite
  auto poisoned = parameter_values(**trainer);
  for (int i = 1; i <= 2; ++i) {
    auto m = (*trainer)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(m->skipped);
    EXPECT_NE(m->skipped_reason.find("is not finite"), std::string::npos)
        << m->skipped_reason;
  }
  EXPECT_EQ((*trainer)->data_parallel().optimizer_steps(), 1);
  const auto after = parameter_values(**trainer);
  ASSERT_EQ(after.size(), poisoned.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(std::memcmp(after[i].data(), poisoned[i].data(), after[i].size() * 4), 0) << i;
  }
  const absl::Status third = (*trainer)->train_step(3).status();
  ASSERT_FALSE(third.ok());
  EXPECT_NE(third.message().find("nonfinite_max_consecutive_skips = 2"), std::string::npos)
      << third;
  // Once the cause is gone, training goes on from where it was.
  weight->value.data()[0] = kept;
  auto recovered = (*trainer)->train_step(4);
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_FALSE(recovered->skipped);
  EXPECT_EQ((*trainer)->data_parallel().optimizer_steps(), 2);
}

}  // namespace
}  // namespace moefold::testing
