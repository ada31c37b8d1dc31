// MPI collectives and point-to-point messages on device buffers: MpiCommunicator stages them
// through host memory, so several ranks can share one GPU and MPI stays the fallback where NCCL
// is absent. Without a GPU the device is the host-memory stand-in (tests/tensor/host_device.h):
// the results must equal the same calls on host buffers, and bytes must have been staged.
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "tensor/ops.h"
#include "tests/tensor/host_device.h"

namespace moefold {
namespace {

std::vector<float> values(int64_t n, int rank) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = float((rank + 1) * 100 + i);
  return v;
}

// Runs `exchange` on tensors of `device` made from the host vectors and returns the outputs.
template <class Exchange>
std::vector<std::vector<float>> run_on(Device device, const std::vector<std::vector<float>>& in,
                                       const std::vector<int64_t>& out_sizes, Exchange exchange) {
  std::vector<Tensor> inputs, outputs;
  for (const auto& v : in) {
    inputs.push_back(ops::to_device(Tensor::from_vector({int64_t(v.size())}, v), device));
  }
  for (int64_t n : out_sizes) outputs.push_back(Tensor::zeros({n}, DType::kFloat32, device));
  exchange(inputs, outputs);
  std::vector<std::vector<float>> result;
  for (const Tensor& t : inputs) result.push_back(t.to_vector());  // in-place ones change
  for (const Tensor& t : outputs) result.push_back(t.to_vector());
  return result;
}

TEST(DeviceStaging, EveryCollectiveOnDeviceBuffersEqualsHostBuffers) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  auto comm = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  const int P = comm->size(), r = comm->rank();
  constexpr int64_t n = 5;
  std::vector<int64_t> uneven(P);  // rank q contributes q + 1 elements
  std::iota(uneven.begin(), uneven.end(), int64_t{1});
  const int64_t uneven_total = std::accumulate(uneven.begin(), uneven.end(), int64_t{0});
  std::vector<int64_t> to_each(P, 2);  // all-to-all-v: 2 elements to every rank
  const auto exchange = [&](std::vector<Tensor>& in, std::vector<Tensor>& out) {
    Communicator& c = *comm;
    c.all_reduce(in[0].data(), n, CommDType::kFloat32, ReduceOp::kSum);
    c.all_gather(in[1].data(), n, out[0].data(), CommDType::kFloat32);
    c.all_gather_v(in[2].data(), r + 1, out[1].data(), uneven, CommDType::kFloat32);
    c.reduce_scatter(in[3].data(), out[2].data(), n, CommDType::kFloat32, ReduceOp::kSum);
    c.all_to_all_v(in[4].data(), to_each, out[3].data(), to_each, CommDType::kFloat32);
    c.broadcast(in[5].data(), n, CommDType::kFloat32, P - 1);
    // A ring of async messages, so sends and receives are in flight together.
    WorkHandle recv = c.recv_async(out[4].data(), n, CommDType::kFloat32, (r + P - 1) % P, 7);
    WorkHandle send = c.send_async(in[1].data(), n, CommDType::kFloat32, (r + 1) % P, 7);
    send.wait();
    recv.wait();
  };
  const std::vector<std::vector<float>> in = {values(n, r), values(n, r), values(r + 1, r),
                                              values(n * P, r), values(2 * P, r), values(n, r)};
  const std::vector<int64_t> out_sizes = {n * P, uneven_total, n, 2 * P, n};
  const auto host = run_on(Device::kCpu, in, out_sizes, exchange);
  const int64_t staged_before = MpiCommunicator::staged_bytes();
  const auto device = run_on(Device::kCuda, in, out_sizes, exchange);
  EXPECT_EQ(device, host);
  EXPECT_GT(MpiCommunicator::staged_bytes(), staged_before) << "device buffers must be staged";
  // Spot-check the host results against their definition.
  EXPECT_EQ(host[0][0], float(P * (P + 1) / 2 * 100));       // all-reduce of element 0
  EXPECT_EQ(host[5][0], float(P * 100));                       // broadcast from the last rank
  EXPECT_EQ(host[10][0], float(((r + P - 1) % P + 1) * 100));  // the ring neighbour's values
}

}  // namespace
}  // namespace moefold
