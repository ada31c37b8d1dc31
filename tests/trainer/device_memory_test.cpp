// A step that does not fit the device's memory ends with one error naming the device, the
// tensor's shape and its bytes (issue 16's bad input), and the launcher adds the rank and where
// the step was (parallel/watchdog.h describe_position). The stand-in device gets a capacity just
// above what the trainer holds before its first step.
#include <gtest/gtest.h>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "parallel/watchdog.h"
#include "tensor/backend.h"
#include "tests/tensor/host_device.h"
#include "tests/trainer/tiny_run.h"
#include "trainer/trainer.h"

namespace moefold {
namespace {

TEST(DeviceMemory, AStepThatDoesNotFitNamesTheDeviceTheTensorAndItsBytes) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  auto& device = dynamic_cast<testing::HostMemoryDevice&>(backend_for(Device::kCuda));
  const std::string dir = testing::fresh_temp_dir("device-memory");
  const Recipe recipe = testing::tiny_recipe(testing::write_tiny_dataset(dir, 60, 3),
                                             dir + "/run", {"training.device=cuda"});
  const ParallelContext ctx = ParallelContext::single_process();
  auto trainer = Trainer::create(recipe, ctx);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  device.set_capacity(device.allocated() + 1024);
  try {
    (void)(*trainer)->train_step(0);
    FAIL() << "the step fit in 1 KiB more than the parameters";
  } catch (const DeviceOutOfMemory& e) {
    const std::string what = e.what();
    std::cout << "the error: " << what << "\n";
    EXPECT_NE(what.find("out of memory on cuda: a tensor ["), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(e.bytes()) + " bytes"), std::string::npos) << what;
    EXPECT_GT(e.bytes(), 0u);
  }
  device.set_capacity(SIZE_MAX);
  EXPECT_EQ(watchdog::describe_position(), " at iteration 1 (forward/backward)");
}

TEST(DeviceMemory, ThePositionIsEmptyBeforeTheFirstStepAndNamesEveryLaterOne) {
  watchdog::set_position(0, "start-up");
  EXPECT_EQ(watchdog::describe_position(), "");
  watchdog::set_position(7, "checkpoint save");
  EXPECT_EQ(watchdog::describe_position(), " at iteration 7 (checkpoint save)");
}

}  // namespace
}  // namespace moefold
