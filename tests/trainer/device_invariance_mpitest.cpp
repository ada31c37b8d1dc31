// The invariance suite on the stand-in device with its memory closed to the host outside
// backend calls (tests/tensor/guarded_arena.h): every parallel dimension, with parameters,
// activations and communication buffers on the device, gives one device process's losses and
// gradient norms, and no host code (MPI staging, dispatch, pipeline and ring transfers, sparse
// gathers, the optimizers) reads or writes device memory directly — which on a GPU would crash.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tests/tensor/host_device.h"
#include "tiny_run.h"

namespace moefold::testing {
namespace {

const std::vector<std::string> kDevice = {"training.device=cuda"};

std::vector<std::string> with_device(std::initializer_list<std::string> settings) {
  std::vector<std::string> out = kDevice;
  out.insert(out.end(), settings);
  return out;
}

// Every dimension, and what only the device path adds: capacity dropping with overlap chunks,
// virtual pipeline stages, and the allgather dispatcher with the expert bias.
std::vector<InvarianceLayout> device_layouts() {
  std::vector<InvarianceLayout> layouts = every_dimension_layouts(kDevice);
  layouts.push_back({"ep2_chunks4_drop", 2, with_device({"moe.moe_expert_capacity_factor=0.75"}),
                     {"parallel.expert_model_parallel_size=2",
                      "parallel.expert_tensor_parallel_size=1",
                      "parallel.moe_a2a_overlap_chunks=4"}});
  layouts.push_back({"pp2_virtual2", 2,
                     with_device({"model.num_layers=4", "moe.moe_layer_freq=[0,1,0,1]"}),
                     {"parallel.pipeline_model_parallel_size=2",
                      "parallel.virtual_pipeline_model_parallel_size=2"}});
  layouts.push_back({"ep2_allgather_bias", 2,
                     with_device({"moe.moe_router_score_function=sigmoid",
                                  "moe.moe_router_enable_expert_bias=true",
                                  "moe.moe_token_dispatcher_type=allgather"}),
                     {"parallel.expert_model_parallel_size=2",
                      "parallel.expert_tensor_parallel_size=1"}});
  return layouts;
}

class DeviceInvariance : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("device-invariance", 31); }
  static inline std::string dir_;
};

TEST_P(DeviceInvariance, MatchesSingleProcess) {
  const InvarianceLayout& l = GetParam();
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  dynamic_cast<HostMemoryDevice&>(backend_for(Device::kCuda)).set_guarded(true);
  expect_matches_single_process(dir_, l.name, l.model, l.parallel, 3);
}

INSTANTIATE_TEST_SUITE_P(Layouts, DeviceInvariance, ::testing::ValuesIn(device_layouts()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::testing
