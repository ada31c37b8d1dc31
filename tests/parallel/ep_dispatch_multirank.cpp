// Token dispatch ↔ combine over EP (and ETP): every row reaches the rank owning its expert,
// grouped by local expert in each chunk, and comes back to the row it left from (summed over the
// ETP ranks), for both dispatchers and several chunk counts; including unbalanced routing (a
// rank with no rows, every row to one expert, no rows anywhere), which must not hang.
#include <gtest/gtest.h>
#include <mpi.h>

#include <random>
#include <string>
#include <vector>

#include "parallel/context.h"
#include "parallel/ep_dispatch.h"

namespace moefold {
namespace {

constexpr int64_t kExperts = 8;
constexpr int64_t kWidth = 3;  // a row: (source world rank, global expert, index in that expert)

enum class Routing { kRandom, kFirstRankEmpty, kAllToExpertZero, kNothing };

std::vector<int64_t> routed_counts(Routing routing, int rank) {
  std::vector<int64_t> counts(kExperts, 0);
  std::mt19937 rng(100 + rank);
  std::uniform_int_distribution<int> count(0, 5);
  switch (routing) {
    case Routing::kRandom:
      for (int64_t& c : counts) c = count(rng);
      break;
    case Routing::kFirstRankEmpty:
      if (rank != 0) {
        for (int64_t& c : counts) c = count(rng);
      }
      break;
    case Routing::kAllToExpertZero:
      counts[0] = 7 + rank;
      break;
    case Routing::kNothing:
      break;
  }
  return counts;
}

struct Setting {
  DispatcherKind kind;
  int etp;
  int chunks;
  Routing routing;
};

class EpDispatch : public ::testing::TestWithParam<Setting> {};

TEST_P(EpDispatch, RowsReachTheirExpertsAndComeBack) {
  const Setting s = GetParam();
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world % s.etp != 0 || kExperts % (world / s.etp) != 0) GTEST_SKIP();
  ParallelConfig config;
  config.expert_model_parallel_size = world / s.etp;
  config.expert_tensor_parallel_size = s.etp;
  auto ctx = ParallelContext::create(config, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const int EP = ctx->ep->size(), ep_rank = ctx->ep->rank();
  const int64_t El = kExperts / EP;

  // This rank's rows, sorted by global expert, each tagged with where it came from.
  const std::vector<int64_t> counts = routed_counts(s.routing, rank);
  std::vector<float> sorted_RW;
  for (int64_t e = 0; e < kExperts; ++e) {
    for (int64_t i = 0; i < counts[e]; ++i) {
      sorted_RW.insert(sorted_RW.end(), {float(rank), float(e), float(i)});
    }
  }
  TokenDispatcher dispatcher({ctx->ep.get(), ctx->etp.get(), ctx->etp_ep.get()}, s.kind, kExperts,
                             s.chunks);
  const DispatchPlan plan = dispatcher.plan(counts);
  const int64_t R = plan.source_rows;
  ASSERT_EQ(R * kWidth, static_cast<int64_t>(sorted_RW.size()));
  std::vector<float> source_RW(R * kWidth);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t w = 0; w < kWidth; ++w) {
      source_RW[r * kWidth + w] = sorted_RW[plan.source_order[r] * kWidth + w];
    }
  }

  // Rows every expert of ours must receive: from each rank of our ETP×EP group (all-to-all:
  // the ranks of our EP group and, after the ETP gather, their ETP peers' EP groups).
  std::vector<int64_t> all_counts(world * kExperts);
  MPI_Allgather(counts.data(), kExperts, MPI_INT64_T, all_counts.data(), kExperts, MPI_INT64_T,
                MPI_COMM_WORLD);
  std::vector<int64_t> expected(El, 0);
  for (int src = 0; src < world; ++src) {
    for (int64_t i = 0; i < El; ++i) expected[i] += all_counts[src * kExperts + ep_rank * El + i];
  }

  // The expert rows of each chunk travel as few copies as possible: runs in expert-row order that
  // cover the chunk's rows, none continuing the one before (those are merged), and one run per
  // chunk when a single rank sends to this rank's experts.
  for (int c = 0; c < plan.chunks; ++c) {
    int64_t row = plan.expert_chunk_rows[c];
    const DispatchPlan::RowRun* previous = nullptr;
    for (int64_t k = plan.expert_run_chunks[c]; k < plan.expert_run_chunks[c + 1]; ++k) {
      const DispatchPlan::RowRun& run = plan.expert_runs[k];
      EXPECT_EQ(run.expert_row, row) << "chunk " << c << " run " << k;
      EXPECT_GT(run.rows, 0);
      if (previous) {
        EXPECT_NE(previous->gathered_row + previous->rows, run.gathered_row) << "not merged";
      }
      row += run.rows;
      previous = &run;
    }
    EXPECT_EQ(row, plan.expert_chunk_rows[c + 1]) << "chunk " << c;
    if (world == 1) {
      EXPECT_LE(plan.expert_run_chunks[c + 1] - plan.expert_run_chunks[c], 1);
    }
  }

  DispatchBuffers buffers;
  std::vector<float> expert_RW(std::max<int64_t>(plan.expert_rows, 1) * kWidth);
  std::vector<float> back_RW(std::max<int64_t>(R, 1) * kWidth, -1.0f);
  dispatcher.start_dispatch(plan, source_RW.data(), kWidth, buffers);
  std::vector<int64_t> received(El, 0);
  for (int c = 0; c < plan.chunks; ++c) {
    dispatcher.finish_dispatch_chunk(plan, c, kWidth, buffers, expert_RW.data());
    const int64_t* off = plan.chunk_expert_offsets(c);
    for (int64_t i = 0; i < El; ++i) {
      for (int64_t r = off[i]; r < off[i + 1]; ++r) {
        const float* row = expert_RW.data() + (plan.expert_chunk_rows[c] + r) * kWidth;
        EXPECT_EQ(row[1], float(ep_rank * El + i)) << "chunk " << c << " row " << r;
        ++received[i];
      }
    }
    // The experts' answer: the row times (ETP rank + 1), so the combine's ETP sum is visible.
    for (int64_t r = plan.expert_chunk_rows[c]; r < plan.expert_chunk_rows[c + 1]; ++r) {
      for (int64_t w = 0; w < kWidth; ++w) expert_RW[r * kWidth + w] *= ctx->etp->rank() + 1;
    }
    dispatcher.start_combine_chunk(plan, c, expert_RW.data(), kWidth, back_RW.data(), buffers);
  }
  dispatcher.finish_combine(buffers);
  EXPECT_EQ(received, expected);
  const float etp_sum = s.etp * (s.etp + 1) / 2.0f;
  for (int64_t i = 0; i < R * kWidth; ++i) {
    ASSERT_EQ(back_RW[i], etp_sum * source_RW[i]) << "element " << i;
  }
}

std::vector<Setting> settings() {
  std::vector<Setting> out;
  for (DispatcherKind kind : {DispatcherKind::kAllToAll, DispatcherKind::kAllGather}) {
    for (int etp : {1, 2}) {
      for (int chunks : {1, 3}) {
        for (Routing r : {Routing::kRandom, Routing::kFirstRankEmpty, Routing::kAllToExpertZero,
                          Routing::kNothing}) {
          out.push_back({kind, etp, chunks, r});
        }
      }
    }
  }
  return out;
}

std::string setting_name(const ::testing::TestParamInfo<Setting>& info) {
  const char* routing[] = {"random", "first_rank_empty", "all_to_expert0", "nothing"};
  return std::string(info.param.kind == DispatcherKind::kAllToAll ? "alltoall" : "allgather") +
         "_etp" + std::to_string(info.param.etp) + "_chunks" + std::to_string(info.param.chunks) +
         "_" + routing[static_cast<int>(info.param.routing)];
}

INSTANTIATE_TEST_SUITE_P(Settings, EpDispatch, ::testing::ValuesIn(settings()), setting_name);

}  // namespace
}  // namespace moefold
