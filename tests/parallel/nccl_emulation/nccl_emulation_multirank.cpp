// The emulated NCCL itself (one emulated GPU per rank): its reductions against sums computed
// here, and the refusals NCCL makes, which the NCCL communicator's errors rely on.
#include <gtest/gtest.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "tensor/kernel_math.h"

namespace moefold {
namespace {

struct World {
  int rank = 0, size = 1;
  World() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
};

ncclUniqueId shared_id() {
  ncclUniqueId id;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  }
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  return id;
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  void* device = nullptr;
  EXPECT_EQ(cudaMallocAsync(&device, sizeof(T) * host.size(), nullptr), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(device, host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  // Done before another stream (the communicator's) reads it: nothing else orders the two.
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  return static_cast<T*>(device);
}

template <class T>
std::vector<T> host_copy(const T* device, size_t n) {
  std::vector<T> host(n);
  EXPECT_EQ(cudaMemcpyAsync(host.data(), device, sizeof(T) * n, cudaMemcpyDeviceToHost),
            cudaSuccess);
  return host;
}

class EmulatedNccl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaSetDevice(world_.rank), cudaSuccess) << "run with MOEFOLD_EMULATED_GPUS=ranks";
    ASSERT_EQ(ncclCommInitRank(&comm_, world_.size, shared_id(), world_.rank), ncclSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }

  World world_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// bf16 sums in float, rounded once; averages divide the sum; integers reduce exactly.
TEST_F(EmulatedNccl, ReductionsMatchTheirDefinitions) {
  const int P = world_.size, r = world_.rank;
  const std::vector<uint16_t> mine = {float_to_bf16_bits(1.0f + r), float_to_bf16_bits(0.25f * r)};
  uint16_t* bf16 = device_copy(mine);
  const std::vector<int64_t> big = {int64_t{1} << 40 | r, -r};
  int64_t* ints = device_copy(big);
  ASSERT_EQ(ncclAllReduce(bf16, bf16, 2, ncclBfloat16, ncclAvg, comm_, stream_), ncclSuccess);
  ASSERT_EQ(ncclAllReduce(ints, ints, 2, ncclInt64, ncclMax, comm_, stream_), ncclSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  float sum0 = 0, sum1 = 0;
  for (int q = 0; q < P; ++q) {
    sum0 += bf16_bits_to_float(float_to_bf16_bits(1.0f + q));
    sum1 += bf16_bits_to_float(float_to_bf16_bits(0.25f * q));
  }
  EXPECT_EQ(host_copy(bf16, 2),
            (std::vector<uint16_t>{float_to_bf16_bits(sum0 / P), float_to_bf16_bits(sum1 / P)}));
  EXPECT_EQ(host_copy(ints, 2), (std::vector<int64_t>{int64_t{1} << 40 | (P - 1), 0}));
  cudaFreeAsync(bf16, nullptr);
  cudaFreeAsync(ints, nullptr);
}

// Every rank refuses a host buffer, or another device's memory, before anything is sent.
TEST_F(EmulatedNccl, BuffersOutsideTheCommunicatorsDeviceAreRefused) {
  std::vector<float> host(4, 1.0f);
  EXPECT_EQ(ncclAllReduce(host.data(), host.data(), 4, ncclFloat32, ncclSum, comm_, stream_),
            ncclInvalidArgument);
  const int other = (world_.rank + 1) % world_.size;
  ASSERT_EQ(cudaSetDevice(other), cudaSuccess);
  float* elsewhere = device_copy(host);
  ASSERT_EQ(cudaSetDevice(world_.rank), cudaSuccess);
  if (other != world_.rank) {
    EXPECT_EQ(ncclBroadcast(elsewhere, elsewhere, 4, ncclFloat32, 0, comm_, stream_),
              ncclInvalidArgument);
  }
  cudaFreeAsync(elsewhere, nullptr);
}

// NCCL refuses two ranks of one communicator on one GPU, on every rank.
TEST(EmulatedNcclInit, RanksSharingAGpuAreRefused) {
  const World world;
  if (world.size < 2) GTEST_SKIP() << "needs two ranks";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ncclComm_t comm = nullptr;
  EXPECT_EQ(ncclCommInitRank(&comm, world.size, shared_id(), world.rank), ncclInvalidUsage);
  EXPECT_EQ(comm, nullptr);
  ASSERT_EQ(cudaSetDevice(world.rank), cudaSuccess);
}

// A buffer freed on another stream before its transfer ran is memory a GPU would already have
// reused: the run ends, naming the call and the buffer. Run only by
// nccl_emulated_early_free_np2 (MOEFOLD_TEST_NCCL_EARLY_FREE=1), which expects that line.
TEST_F(EmulatedNccl, ABufferFreedBeforeItsTransferRanEndsTheRun) {
  const char* flag = std::getenv("MOEFOLD_TEST_NCCL_EARLY_FREE");
  if (flag == nullptr || std::string_view(flag) != "1") {
    GTEST_SKIP() << "runs in nccl_emulated_early_free_np2";
  }
  float* gradients = device_copy(std::vector<float>(8, 1.0f));
  ASSERT_EQ(ncclAllReduce(gradients, gradients, 8, ncclFloat32, ncclSum, comm_, stream_),
            ncclSuccess);
  cudaFreeAsync(gradients, nullptr);  // not ordered after the transfer
  cudaStreamSynchronize(nullptr);     // the free is done, the transfer still held
  cudaStreamSynchronize(stream_);
  ADD_FAILURE() << "the transfer ran on freed memory";
}

}  // namespace
}  // namespace moefold
