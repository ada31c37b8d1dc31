// The CUDA backend against the CPU backend at shapes that exercise what the conformance table's
// tiny shapes cannot: several blocks per grid and grid-stride loops, head dims that are not a
// multiple of the warp, GQA groups, long rows for the block reductions, repeated token ids and
// tokens with several expert choices (the deterministic gathers), and float64 reductions over
// millions of elements. Also: out-of-memory is reported, not a crash; pointer ownership.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda_entry.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/tensor/cuda/device_compare.h"

namespace moefold {
namespace {

using testing::expect_devices_agree;
using testing::host;
using testing::Outputs;
using testing::random_ints;
using testing::random_on;

int ordinal() { return dynamic_cast<cuda::CudaBackend&>(backend_for(Device::kCuda)).ordinal(); }

// Uniform random values of `dtype` on `dev` (bf16: the float32 draw rounded).
Tensor random_as(DType dtype, Device dev, std::vector<int64_t> shape, uint32_t seed) {
  Tensor wide = random_on(dev, shape, seed);
  if (dtype == DType::kFloat32) return wide;
  Tensor narrow = Tensor::empty(std::move(shape), dtype, dev);
  ops::cast(narrow, wide);
  return narrow;
}

TEST(CudaBackend, DescribesItsDevice) {
  const std::string text = backend_for(Device::kCuda).describe();
  EXPECT_NE(text.find("cuda:" + std::to_string(ordinal())), std::string::npos) << text;
  EXPECT_GT(backend_for(Device::kCuda).measure_gemm_flops(512, 0.05), 1e9);
}

// A device→host copy started on the stream: work issued after it does not reach it (stream
// order), the host buffer holds the data once waited for, and a copy dropped unwaited gives
// its pinned buffer back.
TEST(CudaBackend, StartedHostCopiesHoldTheDataOnceWaitedFor) {
  std::vector<float> values(100000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  const Tensor t = ops::to_device(Tensor::from_vector({int64_t(values.size())}, values),
                                  Device::kCuda);
  for (int round = 0; round < 3; ++round) {
    ops::HostCopy before = ops::start_to_host(t);
    ops::scale(t, 2.0f);  // issued after the copy
    ops::HostCopy after = ops::start_to_host(t);
    EXPECT_EQ(before.wait().to_vector(), values) << "round " << round;
    for (float& v : values) v *= 2.0f;
    EXPECT_EQ(after.wait().to_vector(), values) << "round " << round;
  }
  { const ops::HostCopy dropped = ops::start_to_host(t); }  // never waited for: released
  ops::HostCopy again = ops::start_to_host(t);
  EXPECT_EQ(again.wait().to_vector(), values);
  ops::HostCopy empty = ops::start_to_host(Tensor::zeros({0}, DType::kFloat32, Device::kCuda));
  EXPECT_EQ(empty.wait().numel(), 0);
}

// --kernel-profile's recording: CUPTI loads, and the table names the kernels and copies run.
TEST(CudaBackend, KernelProfileNamesTheKernelsAndCopiesItRecorded) {
  const absl::Status started = start_cuda_kernel_profile();
  ASSERT_TRUE(started.ok()) << started;
  Tensor x = Tensor::empty({1 << 20}, DType::kFloat32, Device::kCuda);
  ops::fill(x, 2.0f);
  EXPECT_EQ(x.to_vector()[12345], 2.0f);  // a device-to-host copy
  const absl::StatusOr<std::string> table = finish_cuda_kernel_profile(10);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->find("fill_kernel"), std::string::npos) << *table;
  EXPECT_NE(table->find("memcpy DtoH"), std::string::npos) << *table;
}

// The ordering primitives: an event recorded after work completes once waited for, and a
// synchronised stream has finished what was issued (read back without another wait).
TEST(CudaBackend, EventsAndSynchronisationOrderTheHost) {
  Backend& backend = backend_for(Device::kCuda);
  Tensor x = Tensor::zeros({1 << 20}, DType::kFloat32, Device::kCuda);
  ops::fill(x, 2.0f);
  backend.record_event()->wait();
  ops::scale(x, 0.25f);
  backend.synchronize();
  EXPECT_EQ(ops::sum(x), 0.5 * (1 << 20));
}

TEST(CudaBackend, AttentionWithGqaAndWideHeadsMatchesCpu) {
  for (int64_t d : {40, 96}) {
    SCOPED_TRACE(d);
    expect_devices_agree([d](Device dev) {
      const int64_t B = 2, S = 70, nh = 4, nkv = 2;
      const ops::AttentionShape s{B, S, S, nh, nkv, d};
      std::vector<int32_t> pos(S);
      for (int64_t i = 0; i < S; ++i) pos[i] = static_cast<int32_t>((i * 37) % S);  // unsorted
      Tensor q = random_on(dev, {B, S, nh, d}, 1), k = random_on(dev, {B, S, nkv, d}, 2);
      Tensor v = random_on(dev, {B, S, nkv, d}, 3), dout = random_on(dev, {B, S, nh, d}, 4);
      Tensor o = Tensor::empty({B, S, nh, d}, DType::kFloat32, dev);
      Tensor lse = Tensor::empty({B, nh, S}, DType::kFloat32, dev);
      Tensor dq = Tensor::zeros(q.shape(), DType::kFloat32, dev);
      Tensor dk = Tensor::zeros(k.shape(), DType::kFloat32, dev);
      Tensor dv = Tensor::zeros(v.shape(), DType::kFloat32, dev);
      ops::attention_forward(q, k, v, o, lse, pos, pos, s);
      ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, pos, pos, s);
      return host({o, lse, dq, dk, dv});
    }, 1e-4);
  }
}

TEST(CudaBackend, LongRowsAndManyRowsMatchCpu) {
  expect_devices_agree([](Device dev) {
    const int64_t N = 300, H = 1000;
    Tensor x = random_on(dev, {N, H}, 5), w = random_on(dev, {H}, 6), dy = random_on(dev, {N, H}, 7);
    Tensor y = Tensor::empty({N, H}, DType::kFloat32, dev);
    Tensor rstd = Tensor::empty({N}, DType::kFloat32, dev);
    Tensor dx = Tensor::empty({N, H}, DType::kFloat32, dev), dw = random_on(dev, {H}, 8);
    ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
    ops::rmsnorm_backward(dy, x, w, rstd, dx, dw, false);
    Tensor r = random_on(dev, {N, 4, 64}, 9), r_out = Tensor::empty({N, 4, 64}, DType::kFloat32, dev);
    std::vector<int32_t> positions(N);
    for (int64_t n = 0; n < N; ++n) positions[n] = static_cast<int32_t>(n * 113);
    ops::rope_forward(r, r_out, positions, 4, 64, 1e6f);
    Tensor z = random_on(dev, {N, 160}, 10, -4, 4), p = Tensor::empty({N, 160}, DType::kFloat32, dev);
    Tensor lse = Tensor::empty({N}, DType::kFloat32, dev);
    ops::softmax_rows_forward(z, p);
    ops::logsumexp_rows(z, lse);
    return host({y, rstd, dx, dw, r_out, p, lse});
  }, 1e-4);
}

// The q/k norms of model.qk_layernorm: RMSNorm rows one head wide (12, fewer than a warp, and
// 128), thousands of them, in bf16 and float32, the weight gradient summed over every row.
TEST(CudaBackend, HeadWideNormRowsMatchCpu) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    SCOPED_TRACE(dtype == DType::kBFloat16 ? "bf16" : "float32");
    for (const int64_t d : {12, 128}) {
      SCOPED_TRACE(d);
      expect_devices_agree([&](Device dev) {
        const int64_t rows = 96 * 32;  // 96 tokens of 32 heads
        const auto make = [&](std::vector<int64_t> shape, uint32_t seed) {
          return random_as(dtype, dev, std::move(shape), seed);
        };
        Tensor x = make({96, 32 * d}, 30), w = make({d}, 31), dy = make({96, 32 * d}, 32);
        Tensor y = make({96, 32 * d}, 33), dx = make({96, 32 * d}, 34);
        Tensor rstd = Tensor::empty({rows}, DType::kFloat32, dev), dw = random_on(dev, {d}, 35);
        ops::rmsnorm_forward(x, w, y, rstd, 1e-6f);
        ops::rmsnorm_backward(dy, x, w, rstd, dx, dw, false);
        return host({y, rstd, dx, dw});
      }, dtype == DType::kBFloat16 ? 1e-2 : 1e-4);
    }
  }
}

// Routing at a GPU benchmark's size: thousands of rows over many blocks, 64 experts top-8
// (softmax with aux and z losses; group-limited sigmoid with the expert bias), and the two-pass
// load sums over many 128-row chunks, the last one partial, in three balance groups.
TEST(CudaBackend, RoutingAtBenchmarkSizeMatchesCpu) {
  const int64_t n = 4099, E = 64, k = 8, groups = 3;
  std::vector<int32_t> row_group(n);
  for (int64_t t = 0; t < n; ++t) row_group[t] = static_cast<int32_t>(t * groups / n);
  const std::vector<int32_t> counts32 = random_ints(groups * E, 40, 0, 600);
  const std::vector<int64_t> counts(counts32.begin(), counts32.end());
  for (const bool sigmoid : {false, true}) {
    SCOPED_TRACE(sigmoid ? "sigmoid, group-limited, expert bias" : "softmax, aux and z losses");
    expect_devices_agree([&](Device d) {
      RouterBackwardConfig b;
      b.row.experts = E;
      b.row.topk = k;
      b.row.softmax = !sigmoid;
      b.row.num_groups = sigmoid ? 8 : 0;
      b.row.group_topk = sigmoid ? 4 : 0;
      b.balance = true;
      b.balance_weight = 1e-6;
      b.z_loss = !sigmoid;
      b.z_factor = 2e-3;
      b.z_tokens = static_cast<double>(n);
      Tensor z = random_on(d, {n, E}, 41, -3, 3), bias = random_on(d, {E}, 42, -0.1f, 0.1f);
      Tensor probs = Tensor::empty({n, E}, DType::kFloat32, d);
      Tensor gates = Tensor::empty({n, k}, DType::kFloat32, d);
      Tensor lse = Tensor::empty({n}, DType::kFloat32, d);
      Tensor idx_words = Tensor::empty({n * k}, DType::kFloat32, d);  // int32 storage
      Tensor sum_words = Tensor::empty({2 * (groups * E + 1)}, DType::kFloat32, d);  // float64
      Tensor dgates = random_on(d, {n, k}, 43), dz = Tensor::empty({n, E}, DType::kFloat32, d);
      auto* idx = static_cast<int32_t*>(idx_words.raw_data());
      auto* sums = static_cast<double*>(sum_words.raw_data());
      ops::route_forward(z, sigmoid ? bias : Tensor(), probs, idx, gates, lse, b.row);
      ops::route_load_sums(probs, lse, row_group, groups, sums, b.row);
      ops::route_backward(dgates, {}, gates, probs, z, idx, lse, counts, row_group, dz, b);
      Outputs out = host({probs, gates, lse, dz});
      std::vector<int32_t> idx_host(n * k);
      std::vector<double> sums_host(groups * E + 1);
      ops::copy_memory(idx_host.data(), idx, sizeof(int32_t) * idx_host.size());
      ops::copy_memory(sums_host.data(), sums, sizeof(double) * sums_host.size());
      out.emplace_back(idx_host.begin(), idx_host.end());
      out.emplace_back(sums_host.begin(), sums_host.end());
      return out;
    }, 1e-4);
  }
}

TEST(CudaBackend, CrossEntropyOverChunksMatchesCpu) {
  expect_devices_agree([](Device dev) {
    const int64_t N = 77, H = 48, V = 1000;
    const std::vector<int32_t> labels = random_ints(N, 11, 0, V);
    std::vector<float> mask(N, 1.0f);
    for (int64_t n = 0; n < N; n += 5) mask[n] = 0.0f;
    Tensor h = random_on(dev, {N, H}, 12), w = random_on(dev, {V, H}, 13, -0.3f, 0.3f);
    Tensor dh = Tensor::empty({N, H}, DType::kFloat32, dev), dw = Tensor::zeros({V, H}, DType::kFloat32, dev);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.01f, dh, dw, 16);
    Outputs out = host({dh, dw});
    out.push_back({static_cast<float>(loss)});
    return out;
  }, 1e-4);
}

TEST(CudaBackend, TokenGathersWithRepeatsMatchCpu) {
  expect_devices_agree([](Device dev) {
    const int64_t N = 500, K = 4, H = 96, E = 8, V = 64;
    // Every token's K choices, kept except every seventh, sorted by expert id as the MoE does.
    const std::vector<int32_t> experts = random_ints(N * K, 14, 0, E);
    std::vector<int32_t> perm;
    for (int32_t e = 0; e < E; ++e) {
      for (int32_t a = 0; a < N * K; ++a) {
        if (experts[a] == e && a % 7 != 3) perm.push_back(a);
      }
    }
    const int64_t R = static_cast<int64_t>(perm.size());
    Tensor x = random_on(dev, {N, H}, 15), xs = Tensor::empty({R, H}, DType::kFloat32, dev);
    Tensor gates = random_on(dev, {N, K}, 16), out = Tensor::zeros({N, H}, DType::kFloat32, dev);
    Tensor dys = Tensor::empty({R, H}, DType::kFloat32, dev);
    Tensor dgates = Tensor::zeros({N, K}, DType::kFloat32, dev);
    Tensor dx = Tensor::zeros({N, H}, DType::kFloat32, dev);
    ops::permute_tokens(x, perm, xs, K);
    ops::combine_tokens(xs, perm, gates, out);
    ops::combine_tokens_backward(out, xs, perm, gates, dys, dgates);
    ops::permute_tokens_backward(dys, perm, dx, K);
    // A vocabulary shard of 24 rows starting at row 20; tokens repeat often.
    const std::vector<int32_t> tokens = random_ints(N, 17, 0, V);
    Tensor table = random_on(dev, {24, H}, 18), emb = Tensor::empty({N, H}, DType::kFloat32, dev);
    Tensor dtable = Tensor::zeros({24, H}, DType::kFloat32, dev);
    ops::embedding_forward(tokens, table.slice_rows(0, 24), emb, V, 20);
    ops::embedding_backward(emb, tokens, dtable, V, 20);
    return host({xs, out, dys, dgates, dx, emb, dtable});
  }, 1e-5);
}

// The expert GEMMs at a model's size: 16 experts of uneven rows (2,000 in all), empty ones first,
// in the middle and last. The all-bf16 forward and dx (fresh and accumulating) run as one grouped
// cuBLAS call each; the bf16 dW into float32 gradients and the float32 ones one GEMM per expert.
TEST(CudaBackend, GroupedExpertGemmsAtModelSizeMatchCpu) {
  const int64_t G = 16, I = 256, O = 512;
  std::vector<int64_t> offsets = {0};
  for (int64_t g = 0; g < G; ++g) {
    const bool empty = g == 0 || g == 7 || g == G - 1;
    const int64_t rows = empty ? 0 : g == G - 2 ? 2000 - offsets.back() : 31 + (g * 97) % 251;
    offsets.push_back(offsets.back() + rows);
  }
  const int64_t N = offsets[G];
  ASSERT_EQ(N, 2000);
  for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    SCOPED_TRACE(dtype == DType::kBFloat16 ? "bf16" : "float32");
    expect_devices_agree([&](Device dev) {
      const auto make = [&](std::vector<int64_t> shape, uint32_t seed) {
        return random_as(dtype, dev, std::move(shape), seed);
      };
      Tensor x = make({N, I}, 20), w = make({G, O, I}, 21), dy = make({N, O}, 22);
      Tensor y = make({N, O}, 23), dx = make({N, I}, 24), dx_sum = make({N, I}, 25);
      Tensor dw = make({G, O, I}, 26), dw32 = random_on(dev, {G, O, I}, 27);
      ops::grouped_linear_forward(x, w, y, offsets);
      ops::grouped_linear_backward_dx(dy, w, dx, offsets, false);
      ops::grouped_linear_backward_dx(dy, w, dx_sum, offsets, true);
      ops::grouped_linear_backward_dw(dy, x, dw, offsets);
      ops::grouped_linear_backward_dw(dy, x, dw32, offsets);
      return host({y, dx, dx_sum, dw, dw32});
    }, dtype == DType::kBFloat16 ? 1e-2 : 1e-4);
  }
}

TEST(CudaBackend, ReductionsOverMillionsAreFloat64) {
  expect_devices_agree([](Device dev) {
    Tensor x = random_on(dev, {3'000'001}, 19);
    return Outputs{{static_cast<float>(ops::sum(x)), static_cast<float>(ops::square_sum(x))}};
  }, 1e-6);
}

TEST(CudaBackend, OutOfMemoryIsReportedWithTheBytes) {
  try {
    Tensor huge = Tensor::empty({int64_t{1} << 40}, DType::kFloat32, Device::kCuda);  // 4 TiB
    FAIL() << "expected an out-of-memory error";
  } catch (const DeviceOutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
  // The device is still usable afterwards.
  Tensor small = ops::to_device(Tensor::from_vector({2}, {1.0f, 2.0f}), Device::kCuda);
  EXPECT_EQ(small.to_vector(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(device_of_pointer(small.data()), Device::kCuda);
  std::vector<float> on_host(2);
  EXPECT_EQ(device_of_pointer(on_host.data()), Device::kCpu);
}

// An op's scratch memory that does not fit is the same clear error as a tensor's, with its bytes,
// and the failed allocation does not resurface as the next kernel launch's error.
TEST(CudaBackend, ScratchOutOfMemoryIsReportedAndTheDeviceStaysUsable) {
  const int64_t N = 65536, V = int64_t{1} << 24;  // one chunk of logits: 4 TiB
  Tensor h = Tensor::zeros({N, 1}, DType::kFloat32, Device::kCuda);
  Tensor w = Tensor::zeros({V, 1}, DType::kFloat32, Device::kCuda);
  const std::vector<int32_t> labels(N, 0);
  try {
    ops::cross_entropy_forward_backward(h, w, labels, {}, 0.0f, Tensor(), Tensor(), N);
    FAIL() << "expected an out-of-memory error";
  } catch (const DeviceOutOfMemory& e) {
    EXPECT_EQ(e.bytes(), sizeof(float) * N * V) << e.what();
    EXPECT_NE(std::string(e.what()).find("scratch"), std::string::npos) << e.what();
  }
  Tensor x = Tensor::zeros({1000}, DType::kFloat32, Device::kCuda);
  ops::fill(x, 0.5f);
  EXPECT_EQ(ops::sum(x), 500.0);
}

// Host threads other than the one that registered the backend (MPI's progress thread asks where
// a buffer lives before staging it) end up on the backend's device, not device 0: the test main
// registers the last GPU, so on a machine with several this checks it.
TEST(CudaBackend, OtherThreadsAskingAboutPointersUseTheBackendsDevice) {
  Tensor x = Tensor::zeros({4}, DType::kFloat32, Device::kCuda);
  std::vector<float> on_host(4);
  int device = -1;
  Device x_device = Device::kCpu, host_device = Device::kCuda;
  std::thread([&] {
    x_device = device_of_pointer(x.data());
    host_device = device_of_pointer(on_host.data());
    cudaGetDevice(&device);
  }).join();
  EXPECT_EQ(x_device, Device::kCuda);
  EXPECT_EQ(host_device, Device::kCpu);
  EXPECT_EQ(device, ordinal());
}

}  // namespace
}  // namespace moefold
