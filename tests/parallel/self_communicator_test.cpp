#include "parallel/self_communicator.h"

#include <gtest/gtest.h>

#include <vector>

#include "parallel/context.h"
#include "tensor/check.h"

namespace moefold {
namespace {

TEST(SelfCommunicatorTest, CollectivesAreCopies) {
  SelfCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);

  std::vector<float> data = {1, 2, 3};
  comm.all_reduce(std::span<float>(data), ReduceOp::kSum);
  EXPECT_EQ(data, (std::vector<float>{1, 2, 3}));
  WorkHandle handle = comm.all_reduce_async(data.data(), 3, CommDType::kFloat32, ReduceOp::kMax);
  EXPECT_TRUE(handle.is_done());
  handle.wait();

  std::vector<double> send = {4, 5}, recv(2, 0);
  comm.all_gather(send.data(), 2, recv.data(), CommDType::kFloat64);
  EXPECT_EQ(recv, send);
  recv.assign(2, 0);
  const std::vector<int64_t> two = {2};
  comm.all_gather_v(send.data(), 2, recv.data(), two, CommDType::kFloat64);
  EXPECT_EQ(recv, send);
  recv.assign(2, 0);
  comm.reduce_scatter(send.data(), recv.data(), 2, CommDType::kFloat64, ReduceOp::kSum);
  EXPECT_EQ(recv, send);
  recv.assign(2, 0);
  comm.reduce_scatter_v(send.data(), recv.data(), two, CommDType::kFloat64, ReduceOp::kSum);
  EXPECT_EQ(recv, send);
  recv.assign(2, 0);
  comm.all_to_all(send.data(), recv.data(), 2, CommDType::kFloat64);
  EXPECT_EQ(recv, send);
  recv.assign(2, 0);
  comm.all_to_all_v(send.data(), two, recv.data(), two, CommDType::kFloat64);
  EXPECT_EQ(recv, send);
  comm.broadcast(send.data(), 2, CommDType::kFloat64, 0);
  comm.barrier();
  EXPECT_EQ(comm.all_to_all_counts(two), two);
  EXPECT_EQ(comm.all_gather_counts(5), (std::vector<int64_t>{5}));
}

TEST(SelfCommunicatorTest, ZeroLengthWithNullBuffers) {
  SelfCommunicator comm;
  const std::vector<int64_t> zero = {0};
  comm.all_reduce(nullptr, 0, CommDType::kFloat32, ReduceOp::kSum);
  comm.all_gather(nullptr, 0, nullptr, CommDType::kFloat32);
  comm.all_gather_v(nullptr, 0, nullptr, zero, CommDType::kFloat32);
  comm.all_to_all_v(nullptr, zero, nullptr, zero, CommDType::kFloat32);
  comm.send(nullptr, 0, CommDType::kFloat32, 0);
  comm.recv(nullptr, 0, CommDType::kFloat32, 0);
}

TEST(SelfCommunicatorTest, SendThenRecvByTag) {
  SelfCommunicator comm;
  const std::vector<int32_t> a = {1, 2}, b = {3};
  comm.send(a.data(), 2, CommDType::kInt32, 0, /*tag=*/1);
  comm.send(b.data(), 1, CommDType::kInt32, 0, /*tag=*/2);
  std::vector<int32_t> got_b(1), got_a(2);
  comm.recv(got_b.data(), 1, CommDType::kInt32, 0, 2);
  comm.recv(got_a.data(), 2, CommDType::kInt32, 0, 1);
  EXPECT_EQ(got_a, a);
  EXPECT_EQ(got_b, b);
  EXPECT_THROW(comm.recv(got_b.data(), 1, CommDType::kInt32, 0, 1), InternalError);
}

TEST(SelfCommunicatorTest, MismatchedCountsAreBugs) {
  SelfCommunicator comm;
  float x = 0;
  const std::vector<int64_t> counts = {2};
  EXPECT_THROW(comm.all_gather_v(&x, 1, &x, counts, CommDType::kFloat32), InternalError);
  EXPECT_THROW(comm.broadcast(&x, 1, CommDType::kFloat32, 1), InternalError);
}

TEST(ParallelContextTest, SingleProcessHasTrivialGroups) {
  const ParallelContext context = ParallelContext::single_process();
  EXPECT_EQ(context.coords, RankCoordinates{});
  EXPECT_EQ(context.config.expert_tensor_parallel_size, 1);
  EXPECT_TRUE(context.is_first_pp_stage());
  EXPECT_TRUE(context.is_last_pp_stage());
  for (const auto& comm : {context.world, context.tp, context.cp, context.dp, context.pp,
                           context.dp_cp, context.tp_cp, context.tp_cp_dp, context.tp_pp,
                           context.ep, context.etp, context.edp, context.etp_ep,
                           context.etp_ep_pp, context.embedding}) {
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(comm->size(), 1);
  }
  EXPECT_NE(context.tp, context.dp);  // separate mailboxes per group
}

TEST(CommDTypeTest, SizesAndNames) {
  EXPECT_EQ(comm_dtype_size(CommDType::kFloat32), 4u);
  EXPECT_EQ(comm_dtype_size(CommDType::kFloat64), 8u);
  EXPECT_EQ(comm_dtype_size(CommDType::kInt64), 8u);
  EXPECT_EQ(comm_dtype_size(CommDType::kBFloat16), 2u);
  EXPECT_STREQ(comm_dtype_name(CommDType::kInt32), "int32");
  EXPECT_EQ(comm_dtype_of(DType::kFloat32), CommDType::kFloat32);
  EXPECT_EQ(comm_dtype_v<const double>, CommDType::kFloat64);
  EXPECT_STREQ(reduce_op_name(ReduceOp::kMax), "max");
}

}  // namespace
}  // namespace moefold
