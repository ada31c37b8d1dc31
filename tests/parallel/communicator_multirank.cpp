// Every collective of MpiCommunicator, blocking and async, on the world and on every group of a
// real layout, with zero-length and uneven contributions. Run under mpirun at 2, 4 and 8 ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <algorithm>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "parallel/context.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#include "tensor/check.h"
#include "tensor/kernel_math.h"

namespace moefold {
namespace {

enum class Mode { kBlocking, kAsync };

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// A layout that uses every axis the world size allows: TP 2, PP 2 from 4 ranks, CP 2 at 8 ranks
// plus EP over a whole stage with ETP 1.
ParallelConfig test_config(int world) {
  ParallelConfig config;
  config.tensor_model_parallel_size = world >= 2 ? 2 : 1;
  config.pipeline_model_parallel_size = world >= 4 ? 2 : 1;
  config.context_parallel_size = world >= 8 ? 2 : 1;
  config.expert_model_parallel_size = world / config.pipeline_model_parallel_size;
  config.expert_tensor_parallel_size = 1;
  return config;
}

// Value rank r contributes at index i; exact in float for the sizes used here.
double value(int rank, int64_t i) { return 1000.0 * rank + static_cast<double>(i); }

void run(Mode mode, WorkHandle handle) {
  if (mode == Mode::kAsync) {
    // Not waited on by anything else: the communication thread alone must finish it.
    while (!handle.is_done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  handle.wait();
}

template <class T>
void check_all_reduce(Communicator& comm, Mode mode, int64_t count, ReduceOp op) {
  const int n = comm.size(), me = comm.rank();
  std::vector<T> data(count);
  for (int64_t i = 0; i < count; ++i) data[i] = static_cast<T>(value(me, i));
  run(mode, comm.all_reduce_async(data.data(), count, comm_dtype_v<T>, op));
  for (int64_t i = 0; i < count; ++i) {
    double expected = 0;
    for (int r = 0; r < n; ++r) {
      expected = op == ReduceOp::kSum ? expected + value(r, i) : std::max(expected, value(r, i));
    }
    ASSERT_EQ(data[i], static_cast<T>(expected)) << "index " << i;
  }
}

void check_all_gather(Communicator& comm, Mode mode, int64_t count) {
  const int n = comm.size(), me = comm.rank();
  std::vector<float> send(count), recv(count * n, -1.0f);
  for (int64_t i = 0; i < count; ++i) send[i] = static_cast<float>(value(me, i));
  run(mode, comm.all_gather_async(send.data(), count, recv.data(), CommDType::kFloat32));
  for (int r = 0; r < n; ++r) {
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(recv[r * count + i], value(r, i));
  }
}

// Rank r contributes count_of(r) elements (some zero).
void check_all_gather_v(Communicator& comm, Mode mode, int64_t (*count_of)(int)) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> counts(n);
  for (int r = 0; r < n; ++r) counts[r] = count_of(r);
  EXPECT_EQ(comm.all_gather_counts(counts[me]), counts);
  std::vector<double> send(counts[me]);
  for (int64_t i = 0; i < counts[me]; ++i) send[i] = value(me, i);
  std::vector<double> recv(std::accumulate(counts.begin(), counts.end(), int64_t{0}), -1.0);
  run(mode, comm.all_gather_v_async(send.data(), counts[me], recv.data(), counts,
                                    CommDType::kFloat64));
  int64_t offset = 0;
  for (int r = 0; r < n; ++r) {
    for (int64_t i = 0; i < counts[r]; ++i) ASSERT_EQ(recv[offset + i], value(r, i));
    offset += counts[r];
  }
}

void check_reduce_scatter(Communicator& comm, Mode mode, int64_t recv_count) {
  const int n = comm.size(), me = comm.rank();
  std::vector<float> send(recv_count * n), recv(recv_count, -1.0f);
  for (int64_t i = 0; i < recv_count * n; ++i) send[i] = static_cast<float>(value(me, i));
  run(mode, comm.reduce_scatter_async(send.data(), recv.data(), recv_count, CommDType::kFloat32,
                                      ReduceOp::kSum));
  for (int64_t i = 0; i < recv_count; ++i) {
    double expected = 0;
    for (int r = 0; r < n; ++r) expected += value(r, me * recv_count + i);
    ASSERT_EQ(recv[i], static_cast<float>(expected));
  }
}

void check_reduce_scatter_v(Communicator& comm, Mode mode, int64_t (*count_of)(int)) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> counts(n), offsets(n, 0);
  for (int r = 0; r < n; ++r) counts[r] = count_of(r);
  std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), int64_t{0});
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<int64_t> send(total), recv(counts[me], -1);
  for (int64_t i = 0; i < total; ++i) send[i] = static_cast<int64_t>(value(me, i));
  run(mode, comm.reduce_scatter_v_async(send.data(), recv.data(), counts, CommDType::kInt64,
                                        ReduceOp::kMax));
  for (int64_t i = 0; i < counts[me]; ++i) {
    ASSERT_EQ(recv[i], static_cast<int64_t>(value(n - 1, offsets[me] + i)));
  }
}

void check_all_to_all(Communicator& comm, Mode mode, int64_t count) {
  const int n = comm.size(), me = comm.rank();
  // Element i of the segment for rank d encodes (source, destination, i).
  auto encode = [](int source, int dest, int64_t i) {
    return static_cast<int32_t>(10000 * source + 100 * dest + i);
  };
  std::vector<int32_t> send(count * n), recv(count * n, -1);
  for (int d = 0; d < n; ++d) {
    for (int64_t i = 0; i < count; ++i) send[d * count + i] = encode(me, d, i);
  }
  run(mode, comm.all_to_all_async(send.data(), recv.data(), count, CommDType::kInt32));
  for (int s = 0; s < n; ++s) {
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(recv[s * count + i], encode(s, me, i));
  }
}

// Rank s sends count_of(s, d) elements to rank d; counts are exchanged first, as the dropless
// dispatcher does.
void check_all_to_all_v(Communicator& comm, Mode mode, int64_t (*count_of)(int, int)) {
  const int n = comm.size(), me = comm.rank();
  std::vector<int64_t> send_counts(n), expected_recv_counts(n);
  for (int r = 0; r < n; ++r) {
    send_counts[r] = count_of(me, r);
    expected_recv_counts[r] = count_of(r, me);
  }
  const std::vector<int64_t> recv_counts = comm.all_to_all_counts(send_counts);
  ASSERT_EQ(recv_counts, expected_recv_counts);
  std::vector<float> send, recv(std::accumulate(recv_counts.begin(), recv_counts.end(),
                                                int64_t{0}),
                                -1.0f);
  for (int d = 0; d < n; ++d) {
    for (int64_t i = 0; i < send_counts[d]; ++i) send.push_back(100.0f * me + 10.0f * d + i);
  }
  run(mode, comm.all_to_all_v_async(send.data(), send_counts, recv.data(), recv_counts,
                                    CommDType::kFloat32));
  int64_t offset = 0;
  for (int s = 0; s < n; ++s) {
    for (int64_t i = 0; i < recv_counts[s]; ++i) {
      ASSERT_EQ(recv[offset + i], 100.0f * s + 10.0f * me + i);
    }
    offset += recv_counts[s];
  }
}

void check_broadcast(Communicator& comm, Mode mode, int64_t count) {
  const int root = comm.size() - 1;
  std::vector<double> data(count);
  for (int64_t i = 0; i < count; ++i) data[i] = comm.rank() == root ? value(root, i) : -1.0;
  run(mode, comm.broadcast_async(data.data(), count, CommDType::kFloat64, root));
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(data[i], value(root, i));
}

// Ring: send to the next rank, receive from the previous one.
void check_send_recv(Communicator& comm, Mode mode, int64_t count) {
  const int n = comm.size(), me = comm.rank();
  const int next = (me + 1) % n, previous = (me + n - 1) % n;
  std::vector<double> send(count), recv(count, -1.0);
  for (int64_t i = 0; i < count; ++i) send[i] = value(me, i);
  // A blocking send to oneself cannot complete before its receive is posted.
  if (mode == Mode::kAsync || n == 1) {
    WorkHandle r = comm.recv_async(recv.data(), count, CommDType::kFloat64, previous, 7);
    WorkHandle s = comm.send_async(send.data(), count, CommDType::kFloat64, next, 7);
    run(mode, r);
    run(mode, s);
  } else if (me % 2 == 0) {
    comm.send(send.data(), count, CommDType::kFloat64, next, 7);
    comm.recv(recv.data(), count, CommDType::kFloat64, previous, 7);
  } else {
    comm.recv(recv.data(), count, CommDType::kFloat64, previous, 7);
    comm.send(send.data(), count, CommDType::kFloat64, next, 7);
  }
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(recv[i], value(previous, i));
}

int64_t uneven_count(int rank) { return rank % 3; }  // 0, 1, 2, 0, ...
int64_t zero_count(int) { return 0; }
int64_t uneven_pair_count(int source, int dest) { return (source + 2 * dest) % 3; }
int64_t zero_pair_count(int, int) { return 0; }

void check_every_collective(Communicator& comm, Mode mode) {
  for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{1000}}) {
    SCOPED_TRACE(::testing::Message() << "count " << count);
    check_all_reduce<float>(comm, mode, count, ReduceOp::kSum);
    check_all_reduce<double>(comm, mode, count, ReduceOp::kSum);
    check_all_reduce<int64_t>(comm, mode, count, ReduceOp::kSum);
    check_all_reduce<float>(comm, mode, count, ReduceOp::kMax);
    check_all_reduce<double>(comm, mode, count, ReduceOp::kMax);
    check_all_reduce<int64_t>(comm, mode, count, ReduceOp::kMax);
    check_all_gather(comm, mode, count);
    check_reduce_scatter(comm, mode, count);
    check_all_to_all(comm, mode, std::min<int64_t>(count, 40));
    check_broadcast(comm, mode, count);
    check_send_recv(comm, mode, count);
  }
  check_all_gather_v(comm, mode, uneven_count);
  check_all_gather_v(comm, mode, zero_count);
  check_reduce_scatter_v(comm, mode, uneven_count);
  check_reduce_scatter_v(comm, mode, zero_count);
  check_all_to_all_v(comm, mode, uneven_pair_count);
  check_all_to_all_v(comm, mode, zero_pair_count);
  run(mode, comm.barrier_async());
}

class CommunicatorTest : public ::testing::TestWithParam<Mode> {};

TEST_P(CommunicatorTest, WorldCollectives) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  ASSERT_EQ(world->size(), world_size());
  check_every_collective(*world, GetParam());
}

TEST_P(CommunicatorTest, LayoutGroupCollectives) {
  absl::StatusOr<ParallelContext> context =
      ParallelContext::create(test_config(world_size()), MPI_COMM_WORLD);
  ASSERT_TRUE(context.ok()) << context.status();
  const std::vector<std::pair<const char*, Communicator*>> comms = {
      {"tp", context->tp.get()},         {"cp", context->cp.get()},
      {"dp", context->dp.get()},         {"pp", context->pp.get()},
      {"dp_cp", context->dp_cp.get()},   {"tp_cp", context->tp_cp.get()},
      {"tp_cp_dp", context->tp_cp_dp.get()}, {"ep", context->ep.get()},
      {"edp", context->edp.get()},       {"etp_ep", context->etp_ep.get()},
      {"embedding", context->embedding.get()}};
  for (const auto& [name, comm] : comms) {
    SCOPED_TRACE(name);
    ASSERT_NE(comm, nullptr);
    check_every_collective(*comm, GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(BothForms, CommunicatorTest,
                         ::testing::Values(Mode::kBlocking, Mode::kAsync),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return info.param == Mode::kBlocking ? "Blocking" : "Async";
                         });

// Many operations in flight at once on several communicators, waited on in reverse order: the
// engine must start them in issue order per communicator and never block one on another.
TEST(CommunicatorConcurrencyTest, ManyOutstandingOnSeveralGroups) {
  absl::StatusOr<ParallelContext> context =
      ParallelContext::create(test_config(world_size()), MPI_COMM_WORLD);
  ASSERT_TRUE(context.ok()) << context.status();
  std::vector<Communicator*> comms = {context->world.get(), context->tp.get(),
                                      context->dp_cp.get(), context->ep.get(),
                                      context->pp.get()};
  constexpr int kRounds = 8;
  constexpr int64_t kCount = 4096;
  std::vector<std::vector<double>> buffers;
  std::vector<WorkHandle> handles;
  for (int round = 0; round < kRounds; ++round) {
    for (Communicator* comm : comms) {
      buffers.emplace_back(kCount, static_cast<double>(comm->rank() + round));
      handles.push_back(comm->all_reduce_async(buffers.back().data(), kCount,
                                               CommDType::kFloat64, ReduceOp::kSum));
    }
  }
  for (auto it = handles.rbegin(); it != handles.rend(); ++it) it->wait();
  size_t b = 0;
  for (int round = 0; round < kRounds; ++round) {
    for (Communicator* comm : comms) {
      const int n = comm->size();
      const double expected = n * (n - 1) / 2.0 + static_cast<double>(n) * round;
      for (double x : buffers[b]) ASSERT_EQ(x, expected);
      ++b;
    }
  }
}

TEST(CommunicatorErrorTest, BadArgumentsFailAtTheCall) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  std::vector<int64_t> wrong_counts(world->size() + 1, 0);
  float x = 0;
  EXPECT_THROW(world->all_gather_v(&x, 0, &x, wrong_counts, CommDType::kFloat32),
               InternalError);
  EXPECT_THROW(world->broadcast(&x, 1, CommDType::kFloat32, world->size()), InternalError);
}

// MPI has no bfloat16: the communicator reduces bf16 bits itself, pair by pair in float32 and
// rounded to nearest even (as NCCL does). Values whose sums are exact in bf16 come out exact;
// 1 + 2^-9 per rank rounds away.
TEST(CommunicatorTest, ReducesBfloat16) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  const int P = world->size(), r = world->rank();
  std::vector<uint16_t> data = {float_to_bf16_bits(static_cast<float>(r + 1)),
                                float_to_bf16_bits(-0.5f * static_cast<float>(r)),
                                float_to_bf16_bits(1.0f + 1.0f / 512)};
  world->all_reduce(data.data(), 3, CommDType::kBFloat16, ReduceOp::kSum);
  EXPECT_EQ(bf16_bits_to_float(data[0]), P * (P + 1) / 2.0f);
  EXPECT_EQ(bf16_bits_to_float(data[1]), -0.25f * P * (P - 1));
  EXPECT_EQ(bf16_bits_to_float(data[2]), static_cast<float>(P));
  uint16_t top = float_to_bf16_bits(static_cast<float>(r));
  world->all_reduce(&top, 1, CommDType::kBFloat16, ReduceOp::kMax);
  EXPECT_EQ(bf16_bits_to_float(top), static_cast<float>(P - 1));
}

}  // namespace
}  // namespace moefold
