// The FSSDP sparse collectives against values computed by formula: each rank needs a random
// subset of the items (one rank none, one item nobody), gathers exactly every rank's shard of
// the items it needs, and the reduce-scatter sums each item's slices over the ranks that needed
// it, onto the slice's owner. Under training.bf16 the gather moves bf16 bits, half the bytes.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/sparse_shards.h"

namespace moefold {
namespace {

constexpr int64_t kItems = 5;
constexpr int64_t kPart0 = 3, kPart1 = 2, kShard = kPart0 + kPart1;

bool needs(int rank, int64_t item) {
  if (rank == 1 || item == 3) return false;  // a rank needing nothing; an item nobody needs
  std::mt19937 rng(static_cast<unsigned>(rank * 31 + item));
  return rng() % 3 != 0;
}

// Element e of rank r's shard of item k.
float shard_value(int r, int64_t k, int64_t e) { return 100.0f * r + 10.0f * k + e; }
// Element e of slice j of item k's gradient on rank r.
float gradient_value(int r, int64_t k, int j, int64_t e) {
  return 1000.0f * r + 100.0f * k + 10.0f * j + e;
}

TEST(SparseShards, GatherAndReduceScatterMatchTheFormula) {
  const auto world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  Communicator& group = *world;
  const int P = group.size(), me = group.rank();
  std::vector<float> part0(kItems * kPart0), part1(kItems * kPart1);
  for (int64_t k = 0; k < kItems; ++k) {
    for (int64_t e = 0; e < kPart0; ++e) part0[k * kPart0 + e] = shard_value(me, k, e);
    for (int64_t e = 0; e < kPart1; ++e) part1[k * kPart1 + e] = shard_value(me, k, kPart0 + e);
  }
  const std::vector<ShardPart> parts = {{part0.data(), kPart0}, {part1.data(), kPart1}};
  std::vector<uint8_t> flags(kItems);
  for (int64_t k = 0; k < kItems; ++k) flags[k] = needs(me, k);

  const SparseShardPlan plan = plan_sparse_shards(group, flags, kShard);
  const std::vector<int64_t> mine = plan.items_of(me);
  for (int r = 0; r < P; ++r) {
    for (int64_t k = 0; k < kItems; ++k) EXPECT_EQ(plan.needs_item(r, k), needs(r, k));
  }
  const int64_t n = static_cast<int64_t>(mine.size());
  std::vector<float> gathered(P * n * kShard, -1.0f);
  SparseShardExchange exchange;
  const int64_t before = MemoryStats::current_bytes();
  start_sparse_all_gather(group, plan, parts, gathered.data(), exchange);
  exchange.handle.wait();
  // The staging is allocator memory, so the reported peak counts it.
  int64_t sent = 0;
  for (int q = 0; q < P; ++q) sent += plan.needed[q] * kShard;
  EXPECT_GE(MemoryStats::current_bytes() - before, sent * static_cast<int64_t>(sizeof(float)));
  for (int j = 0; j < P; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t e = 0; e < kShard; ++e) {
        ASSERT_EQ(gathered[(j * n + i) * kShard + e], shard_value(j, mine[i], e))
            << "rank " << j << " item " << mine[i];
      }
    }
  }

  std::vector<float> gradients(P * n * kShard);
  for (int j = 0; j < P; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t e = 0; e < kShard; ++e) {
        gradients[(j * n + i) * kShard + e] = gradient_value(me, mine[i], j, e);
      }
    }
  }
  std::vector<float> grad0(kItems * kPart0, 0.5f), grad1(kItems * kPart1, 0.5f);
  const std::vector<ShardPart> grads = {{grad0.data(), kPart0}, {grad1.data(), kPart1}};
  sparse_reduce_scatter(group, plan, gradients.data(), grads);
  for (int64_t k = 0; k < kItems; ++k) {
    for (int64_t e = 0; e < kShard; ++e) {
      float expected = 0.5f;
      for (int q = 0; q < P; ++q)
        if (needs(q, k)) expected += gradient_value(q, k, me, e);
      const float got = e < kPart0 ? grad0[k * kPart0 + e] : grad1[k * kPart1 + e - kPart0];
      ASSERT_EQ(got, expected) << "item " << k << " element " << e;
    }
  }
}

// bf16 parts (the compute copies under training.bf16): the gather moves their bits exactly, and
// its staging, which is what goes on the wire, holds 2 bytes an element.
TEST(SparseShards, Bf16GatherMovesTheBitsInHalfTheBytes) {
  const auto world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  Communicator& group = *world;
  const int P = group.size(), me = group.rank();
  auto bits = [](int r, int64_t k, int64_t e) {
    return static_cast<uint16_t>(0x3f00 + shard_value(r, k, e));
  };
  std::vector<uint16_t> part0(kItems * kPart0), part1(kItems * kPart1);
  for (int64_t k = 0; k < kItems; ++k) {
    for (int64_t e = 0; e < kPart0; ++e) part0[k * kPart0 + e] = bits(me, k, e);
    for (int64_t e = 0; e < kPart1; ++e) part1[k * kPart1 + e] = bits(me, k, kPart0 + e);
  }
  const std::vector<ShardPart> parts = {{part0.data(), kPart0, CommDType::kBFloat16},
                                        {part1.data(), kPart1, CommDType::kBFloat16}};
  std::vector<uint8_t> flags(kItems);
  for (int64_t k = 0; k < kItems; ++k) flags[k] = needs(me, k);
  const SparseShardPlan plan = plan_sparse_shards(group, flags, kShard);
  const std::vector<int64_t> mine = plan.items_of(me);
  const int64_t n = static_cast<int64_t>(mine.size());
  std::vector<uint16_t> gathered(P * n * kShard, 0xffff);
  SparseShardExchange exchange;
  start_sparse_all_gather(group, plan, parts, gathered.data(), exchange);
  exchange.handle.wait();
  int64_t sent = 0;
  for (int q = 0; q < P; ++q) sent += plan.needed[q] * kShard;
  EXPECT_EQ(exchange.send.dtype(), DType::kBFloat16);
  EXPECT_EQ(exchange.send.nbytes(), std::max<int64_t>(sent, 1) * sizeof(uint16_t));
  for (int j = 0; j < P; ++j) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t e = 0; e < kShard; ++e) {
        ASSERT_EQ(gathered[(j * n + i) * kShard + e], bits(j, mine[i], e))
            << "rank " << j << " item " << mine[i];
      }
    }
  }
}

}  // namespace
}  // namespace moefold
