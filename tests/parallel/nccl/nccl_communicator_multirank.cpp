// The NCCL communicator against the MPI one (label gpu; one GPU per rank): every collective and
// message on GPU buffers through NCCL must equal the same calls on host buffers through MPI.
// Host buffers given to the NCCL communicator take its MPI path. Without a GPU per rank the
// test skips.
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/nccl/nccl_communicator.h"
#include "tensor/backend.h"
#include "tensor/cuda_entry.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

std::vector<float> values(int64_t n, int rank) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = float((rank + 1) * 100 + i);
  return v;
}

// True on every rank when every rank has a GPU of its own and its CUDA backend registered.
bool gpu_per_rank() {
  int size = 1, rank = 0, ok = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (cuda_device_count() >= size) {
    ok = has_backend(Device::kCuda) || register_cuda_device(rank).ok() ? 1 : 0;
  }
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok == 1;
}

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
  for (const Tensor& t : inputs) result.push_back(t.to_vector());
  for (const Tensor& t : outputs) result.push_back(t.to_vector());
  return result;
}

TEST(NcclCommunicator, EveryCollectiveOnGpuBuffersEqualsMpiOnHostBuffers) {
  if (!gpu_per_rank()) GTEST_SKIP() << "needs one GPU per rank";
  std::shared_ptr<MpiCommunicator> mpi = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  auto nccl = NcclCommunicator::create(MpiCommunicator::duplicate(MPI_COMM_WORLD));
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  const int P = mpi->size(), r = mpi->rank();
  constexpr int64_t n = 5;
  std::vector<int64_t> uneven(P);  // rank q contributes q + 1 elements
  std::iota(uneven.begin(), uneven.end(), int64_t{1});
  const int64_t uneven_total = std::accumulate(uneven.begin(), uneven.end(), int64_t{0});
  std::vector<int64_t> to_each(P, 2);
  const auto exchange_with = [&](Communicator& c) {
    return [&](std::vector<Tensor>& in, std::vector<Tensor>& out) {
      c.all_reduce(in[0].data(), n, CommDType::kFloat32, ReduceOp::kSum);
      c.all_gather(in[1].data(), n, out[0].data(), CommDType::kFloat32);
      c.all_gather_v(in[2].data(), r + 1, out[1].data(), uneven, CommDType::kFloat32);
      c.reduce_scatter(in[3].data(), out[2].data(), n, CommDType::kFloat32, ReduceOp::kSum);
      c.all_to_all_v(in[4].data(), to_each, out[3].data(), to_each, CommDType::kFloat32);
      c.broadcast(in[5].data(), n, CommDType::kFloat32, P - 1);
      c.reduce_scatter_v(in[6].data(), out[4].data(), uneven, CommDType::kFloat32,
                         ReduceOp::kMax);
      WorkHandle recv = c.recv_async(out[5].data(), n, CommDType::kFloat32, (r + P - 1) % P);
      WorkHandle send = c.send_async(in[1].data(), n, CommDType::kFloat32, (r + 1) % P);
      send.wait();
      recv.wait();
      c.barrier();
    };
  };
  const std::vector<std::vector<float>> in = {values(n, r),     values(n, r),
                                              values(r + 1, r), values(n * P, r),
                                              values(2 * P, r), values(n, r),
                                              values(uneven_total, r)};
  const std::vector<int64_t> out_sizes = {n * P, uneven_total, n, 2 * P, r + 1, n};
  const auto host = run_on(Device::kCpu, in, out_sizes, exchange_with(*mpi));
  const auto gpu = run_on(Device::kCuda, in, out_sizes, exchange_with(**nccl));
  EXPECT_EQ(gpu, host);
  // Host buffers through the NCCL communicator take its MPI path and give the same answers.
  const auto host_via_nccl = run_on(Device::kCpu, in, out_sizes, exchange_with(**nccl));
  EXPECT_EQ(host_via_nccl, host);
}

// The pipeline's pattern, both directions at once: each rank first posts its receive of a
// gradient (lane 1) from the next rank, then sends an activation (lane 0) to it, and the same
// with the previous rank. On one stream the receives would hold back the sends the peers wait
// for; in lanes of their own every message arrives.
TEST(NcclCommunicator, MessagesBetweenRingNeighboursTravelInLanes) {
  if (!gpu_per_rank()) GTEST_SKIP() << "needs one GPU per rank";
  auto nccl = NcclCommunicator::create(MpiCommunicator::duplicate(MPI_COMM_WORLD), true);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  Communicator& c = **nccl;
  const int P = c.size(), r = c.rank();
  if (P < 2) GTEST_SKIP() << "needs two ranks";
  const int next = (r + 1) % P, prev = (r + P - 1) % P;
  constexpr int64_t n = 1 << 20;  // beyond NCCL's buffers, so a send waits for its receive
  const Tensor activation = ops::to_device(Tensor::from_vector({n}, values(n, r)), Device::kCuda);
  const Tensor gradient =
      ops::to_device(Tensor::from_vector({n}, values(n, r + P)), Device::kCuda);
  Tensor from_prev = Tensor::zeros({n}, DType::kFloat32, Device::kCuda);
  Tensor from_next = Tensor::zeros({n}, DType::kFloat32, Device::kCuda);
  constexpr int kActivationTag = 2, kGradientTag = 3;  // lanes 0 and 1
  WorkHandle got_gradient = c.recv_async(from_next.data(), n, CommDType::kFloat32, next,
                                         kGradientTag);
  WorkHandle got_activation = c.recv_async(from_prev.data(), n, CommDType::kFloat32, prev,
                                           kActivationTag);
  WorkHandle sent_activation = c.send_async(activation.data(), n, CommDType::kFloat32, next,
                                            kActivationTag);
  WorkHandle sent_gradient = c.send_async(gradient.data(), n, CommDType::kFloat32, prev,
                                          kGradientTag);
  for (WorkHandle* h : {&got_gradient, &got_activation, &sent_activation, &sent_gradient}) {
    h->wait();
  }
  EXPECT_EQ(from_prev.to_vector(), values(n, prev));
  EXPECT_EQ(from_next.to_vector(), values(n, next + P));
}

}  // namespace
}  // namespace moefold
