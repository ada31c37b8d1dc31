// The invariance suite on the stand-in device with its memory closed to the host outside
// backend calls (tests/tensor/guarded_arena.h): every parallel dimension, with parameters,
// activations and communication buffers on the device, gives one device process's losses and
// gradient norms, and no host code (MPI staging, dispatch, pipeline and ring transfers, sparse
// gathers, the optimizers) reads or writes device memory directly — which on a GPU would crash.
// On a GPU machine the gpu-labelled device_invariance_gpu_np<N> (MOEFOLD_TEST_REAL_GPU=1) runs
// the same layouts on the real CUDA backend, every rank sharing GPU 0 through MPI staging, in
// float32 and in bf16 with head dim 64 (the flash attention kernels, ring attention included).
// With NCCL, device_invariance_nccl_np<N> (MOEFOLD_TEST_NCCL=1) runs the device layouts with a
// GPU per rank over the NCCL communicator; MOEFOLD_CUDA=EMULATED builds run it on emulated GPUs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cuda_entry.h"
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
// virtual pipeline stages, the allgather dispatcher with the expert bias, and q/k norms (their
// rows are heads of 12) under TP.
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
  layouts.push_back({"tp2_sp_qk_norm", 2,
                     with_device({"model.qk_layernorm=true", "model.kv_channels=12"}),
                     {"parallel.tensor_model_parallel_size=2",
                      "parallel.expert_tensor_parallel_size=1", "parallel.sequence_parallel=true"}});
  return layouts;
}

// Whether the environment variable `name` is "1": a gpu-labelled ctest entry's switch.
bool requested(const char* name) {
  const char* flag = std::getenv(name);
  return flag != nullptr && std::string_view(flag) == "1";
}

// Registers the real CUDA backend on GPU `device` (once: a process runs one suite); false
// unless the machine has `gpus_needed` GPUs.
bool use_gpu(int device, int gpus_needed) {
  static const bool registered = [device, gpus_needed] {
#if MOEFOLD_HAVE_CUDA
    if (cuda_device_count() < gpus_needed) return false;
    const absl::Status status = register_cuda_device(device);
    EXPECT_TRUE(status.ok()) << status;
    return status.ok();
#else
    return false;
#endif
  }();
  return registered;
}

class DeviceInvariance : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("device-invariance", 31); }
  static inline std::string dir_;
};

TEST_P(DeviceInvariance, MatchesSingleProcess) {
  const InvarianceLayout& l = GetParam();
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  if (requested("MOEFOLD_TEST_REAL_GPU")) GTEST_SKIP() << "the stand-in's layouts run in device_invariance_np*";
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  dynamic_cast<HostMemoryDevice&>(backend_for(Device::kCuda)).set_guarded(true);
  expect_matches_single_process(dir_, l.name, l.model, l.parallel, 3);
}

// Backend calls of this rank in a whole run (set-up, two steps, tear-down) of the layout with
// `sequences` (×4 for the global batch: as many micro-batches) of `seq_length` tokens per
// micro-batch. Whole runs, because overlapped communication makes device calls from other
// threads: between two steps their count depends on timing, after the run's last handle has
// been waited for it does not.
int64_t device_calls_of_a_run(const std::string& dir, const InvarianceLayout& l, int sequences,
                              int seq_length) {
  std::vector<std::string> overrides = l.model;
  overrides.insert(overrides.end(), l.parallel.begin(), l.parallel.end());
  overrides.push_back("model.seq_length=" + std::to_string(seq_length));
  overrides.push_back("training.micro_batch_size=" + std::to_string(sequences));
  overrides.push_back("training.global_batch_size=" + std::to_string(4 * sequences));
  const std::string run =
      "-calls" + std::to_string(sequences) + "x" + std::to_string(seq_length);
  const Recipe recipe = tiny_recipe(tiny_prefix(dir), dir + "/" + l.name + run, overrides);
  const auto& device = dynamic_cast<HostMemoryDevice&>(backend_for(Device::kCuda));
  const int64_t before = device.device_calls();
  {
    auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    if (!ctx.ok()) return -1;
    run_steps(recipe, *ctx, 2);
  }
  return device.device_calls() - before;
}

// Kernel launches and copies per step depend on the layout, never on the tokens: a per-token or
// per-row device call (a copy per dispatched row, say) costs a GPU microseconds each, thousands
// per layer. Every layout's run with twice the sequence length, or twice the sequences per
// micro-batch, makes exactly as many on each rank. Except one, on purpose: ring attention (CP)
// runs each (query chunk, key chunk) pair per sequence, as a sequence's chunks are not one
// strided batch; each such call holds a chunk² of attention work, and CP runs take one long
// sequence per micro-batch.
TEST_P(DeviceInvariance, DeviceCallsDoNotGrowWithTheTokens) {
  const InvarianceLayout& l = GetParam();
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  if (requested("MOEFOLD_TEST_REAL_GPU")) GTEST_SKIP() << "the stand-in's layouts run in device_invariance_np*";
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const int64_t calls = device_calls_of_a_run(dir_, l, 2, 16);
  EXPECT_GT(calls, 0);
  EXPECT_EQ(device_calls_of_a_run(dir_, l, 2, 32), calls)
      << l.name << " on rank " << world_rank() << ": longer sequences";
  const bool ring_attention =
      std::any_of(l.parallel.begin(), l.parallel.end(), [](const std::string& setting) {
        return setting.starts_with("parallel.context_parallel_size=");
      });
  if (ring_attention) return;
  EXPECT_EQ(device_calls_of_a_run(dir_, l, 4, 16), calls)
      << l.name << " on rank " << world_rank() << ": more sequences per micro-batch";
}

INSTANTIATE_TEST_SUITE_P(Layouts, DeviceInvariance, ::testing::ValuesIn(device_layouts()),
                         [](const auto& info) { return info.param.name; });

// On the GPU, float32 GEMMs of other shapes may take other cuBLAS kernels (split-K), so sums
// run in other orders: ~1e-7 relative per GEMM, where the CPU's are bit-equal; 1e-4 keeps a
// missing reduction or a dropped shard far outside. bf16 takes bf16_invariance's tolerance.
constexpr StepTolerance kGpuFloat32Tolerance{1e-4, 1e-4, 1e-3};

struct GpuLayout {
  InvarianceLayout layout;
  bool bf16;
};

std::vector<GpuLayout> gpu_layouts() {
  std::vector<GpuLayout> layouts;
  for (InvarianceLayout& l : device_layouts()) layouts.push_back({std::move(l), false});
  // Head dim 64 (hidden 128, 2 heads) and 96 tokens: the flash kernels over a full and a partial
  // tile, and under CP over each rank's load-balanced chunks.
  const std::vector<std::string> flash = {"training.device=cuda", "training.bf16=true",
                                          "model.hidden_size=128", "model.num_attention_heads=2",
                                          "model.num_query_groups=2", "model.seq_length=96"};
  for (InvarianceLayout& l : every_dimension_layouts(flash)) {
    l.name += "_bf16_flash";
    layouts.push_back({std::move(l), true});
  }
  return layouts;
}

class RealGpuInvariance : public ::testing::TestWithParam<GpuLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("gpu-invariance", 37); }
  static inline std::string dir_;
};

TEST_P(RealGpuInvariance, MatchesSingleProcess) {
  const GpuLayout& g = GetParam();
  const InvarianceLayout& l = g.layout;
  if (!requested("MOEFOLD_TEST_REAL_GPU")) GTEST_SKIP() << "runs in device_invariance_gpu_np*";
  if (!use_gpu(0, 1)) GTEST_SKIP() << "no GPU on this machine";  // shared by every rank
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  expect_matches_single_process(dir_, l.name, l.model, l.parallel, 3,
                                g.bf16 ? kBf16InvarianceTolerance : kGpuFloat32Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Layouts, RealGpuInvariance, ::testing::ValuesIn(gpu_layouts()),
                         [](const auto& info) { return info.param.layout.name; });

class NcclInvariance : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() { dir_ = shared_tiny_corpus("nccl-invariance", 41); }
  static inline std::string dir_;
};

TEST_P(NcclInvariance, MatchesSingleProcess) {
  const InvarianceLayout& l = GetParam();
  if (!requested("MOEFOLD_TEST_NCCL")) GTEST_SKIP() << "runs in device_invariance_nccl_np*";
  if (world_size() != l.world) GTEST_SKIP() << l.name << " runs on " << l.world << " ranks";
  if (!use_gpu(world_rank(), world_size())) GTEST_SKIP() << "needs one GPU per rank";
  std::vector<std::string> parallel = l.parallel;
  parallel.push_back("parallel.communicator=nccl");
  expect_matches_single_process(dir_, l.name, l.model, parallel, 3, kGpuFloat32Tolerance);
}

INSTANTIATE_TEST_SUITE_P(Layouts, NcclInvariance, ::testing::ValuesIn(device_layouts()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::testing
