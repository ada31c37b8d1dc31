// ParallelContext::create over MPI: every communicator holds exactly the ranks of its layout
// group, in layout order, and bad configurations fail identically on every rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "parallel/context.h"
#include "parallel/layout.h"
#include "parallel/mpi_runtime.h"

namespace moefold {
namespace {


ParallelConfig config_of(int tp, int cp, int pp, int ep, int etp) {
  ParallelConfig config;
  config.tensor_model_parallel_size = tp;
  config.context_parallel_size = cp;
  config.pipeline_model_parallel_size = pp;
  config.expert_model_parallel_size = ep;
  config.expert_tensor_parallel_size = etp;
  return config;
}

// Every shape the world size allows, from a fixed list so that all ranks agree.
std::vector<ParallelConfig> shapes(int world) {
  std::vector<ParallelConfig> result;
  for (int pp : {1, 2, 4}) {
    for (int tp : {1, 2}) {
      for (int cp : {1, 2}) {
        for (int ep : {1, 2, 4}) {
          for (int etp : {1, 2}) {
            if (world % (tp * cp * pp) == 0 && world % (etp * ep * pp) == 0) {
              result.push_back(config_of(tp, cp, pp, ep, etp));
            }
          }
        }
      }
    }
  }
  return result;
}

TEST(ParallelContextTest, GroupsMatchThePureLayout) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (const ParallelConfig& config : shapes(world)) {
    SCOPED_TRACE(::testing::Message()
                 << "tp " << config.tensor_model_parallel_size << " cp "
                 << config.context_parallel_size << " pp " << config.pipeline_model_parallel_size
                 << " ep " << config.expert_model_parallel_size << " etp "
                 << config.expert_tensor_parallel_size);
    absl::StatusOr<RankLayout> layout = build_rank_layout(config, world);
    ASSERT_TRUE(layout.ok()) << layout.status();
    absl::StatusOr<ParallelContext> context = ParallelContext::create(config, MPI_COMM_WORLD);
    ASSERT_TRUE(context.ok()) << context.status();
    EXPECT_EQ(context->coords, layout->coordinates[rank]);
    EXPECT_EQ(context->world->size(), world);
    EXPECT_EQ(context->world->rank(), rank);
    for (GroupKind kind : all_group_kinds()) {
      SCOPED_TRACE(group_kind_name(kind));
      const RankGroup* group = layout->group_of(kind, rank);
      std::shared_ptr<Communicator> comm = context->group(kind);
      if (group == nullptr) {
        EXPECT_EQ(comm, nullptr);
        continue;
      }
      ASSERT_NE(comm, nullptr);
      // Gathering world ranks over the communicator lists its members in communicator order.
      std::vector<int64_t> members(comm->size());
      const int64_t me = rank;
      comm->all_gather(&me, 1, members.data(), CommDType::kInt64);
      EXPECT_EQ(std::vector<int64_t>(group->begin(), group->end()), members);
    }
  }
}

TEST(ParallelContextTest, BadConfigFailsOnEveryRankBeforeAnyCommunication) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ParallelConfig config;
  config.tensor_model_parallel_size = 3;
  absl::StatusOr<ParallelContext> context = ParallelContext::create(config, MPI_COMM_WORLD);
  ASSERT_FALSE(context.ok());
  EXPECT_NE(context.status().message().find("is not divisible by tensor_model_parallel_size 3"),
            std::string::npos)
      << context.status();
}

// MPI is already up (the test main): the runtime reports it and leaves finalising to its owner.
TEST(MpiRuntimeTest, AdoptsAnInitialisedMpi) {
  int world = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  {
    absl::StatusOr<std::unique_ptr<MpiRuntime>> runtime = MpiRuntime::initialize(nullptr, nullptr);
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    EXPECT_EQ((*runtime)->thread_level(), MPI_THREAD_MULTIPLE);
    EXPECT_EQ((*runtime)->world_size(), world);
    EXPECT_EQ((*runtime)->world_rank(), rank);
  }
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_FALSE(finalized);
}

}  // namespace
}  // namespace moefold
