// The FSSDP placement plan and replica routing table (parallel/expert_placement.h): pure integer
// functions, so every property is checked exhaustively on random loads: determinism (the same
// input gives bit-identical plans and hashes), replicas only where they lower the predicted
// busiest rank, budgets respected, rows conserved, local replicas served first.
#include "parallel/expert_placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

namespace moefold {
namespace {

std::vector<int64_t> zipf_load(int64_t E, double s, int64_t total, unsigned seed) {
  std::vector<double> w(E);
  for (int64_t e = 0; e < E; ++e) w[e] = 1.0 / std::pow(e + 1.0, s);
  std::mt19937 rng(seed);
  std::shuffle(w.begin(), w.end(), rng);
  std::discrete_distribution<int64_t> pick(w.begin(), w.end());
  std::vector<int64_t> load(E, 0);
  for (int64_t i = 0; i < total; ++i) ++load[pick(rng)];
  return load;
}

std::pair<int64_t, int64_t> peak(const std::vector<int64_t>& load) {
  const int64_t m = *std::max_element(load.begin(), load.end());
  return {m, std::count(load.begin(), load.end(), m)};
}

TEST(ExpertPlacement, NoBudgetIsThePlainEpLayout) {
  const std::vector<int64_t> load = {100, 0, 0, 0, 5, 5, 5, 5};
  const ExpertPlacement p = plan_expert_placement(load, ep_owners(8, 4), 4, {0, 0});
  EXPECT_EQ(p.replicas(), 0);
  EXPECT_EQ(p.hash(), make_placement(ep_owners(8, 4), {{0}, {0}, {1}, {1}, {2}, {2}, {3}, {3}}, 4)
                          .hash());
  EXPECT_EQ(p.slots[1], (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(p.max_slots(), 2);
}

TEST(ExpertPlacement, HotExpertIsReplicatedOnEveryRank) {
  const std::vector<int64_t> load = {4000, 0, 0, 0, 0, 0, 0, 0};
  const ExpertPlacement p = plan_expert_placement(load, ep_owners(8, 4), 4, {1, 0});
  EXPECT_EQ(p.holders[0], (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(p.replicas(), 3);
  EXPECT_EQ(predicted_rank_load(p, load), (std::vector<int64_t>{1000, 1000, 1000, 1000}));
  // Replica slots follow the owned ones.
  EXPECT_EQ(p.slots[2], (std::vector<int64_t>{4, 5, 0}));
  EXPECT_EQ(p.slot_of(2, 0), 2);
  EXPECT_EQ(p.slot_of(2, 1), -1);
}

// After the gate: the actual counts are routed only to the materialised replicas that help.
TEST(ExpertPlacement, CalibrationKeepsOnlyTheReplicasTheActualLoadNeeds) {
  const ExpertPlacement planned =
      plan_expert_placement(std::vector<int64_t>{4000, 0, 0, 0, 0, 0, 0, 0}, ep_owners(8, 4), 4,
                            {1, 0});
  ASSERT_EQ(planned.holders[0], (std::vector<int>{0, 1, 2, 3}));
  // The hot expert went cold: its replicas would only cost.
  EXPECT_EQ(calibrate_placement(planned, std::vector<int64_t>{0, 0, 4000, 0, 0, 0, 0, 0})
                .replicas(),
            0);
  // Still hot, but rank 1 is busy with expert 2: the replica there goes, and the one on rank 2
  // is not needed for the new peak (rank 1's 2000 rows).
  const std::vector<int64_t> load = {3000, 0, 2000, 0, 0, 0, 0, 0};
  const ExpertPlacement calibrated = calibrate_placement(planned, load);
  EXPECT_EQ(calibrated.holders[0], (std::vector<int>{0, 3}));
  EXPECT_EQ(predicted_rank_load(calibrated, load), (std::vector<int64_t>{1500, 2000, 0, 1500}));
  EXPECT_EQ(calibrated.owner, planned.owner);
}

TEST(ExpertPlacement, BalancedLoadGetsNoReplicas) {
  const std::vector<int64_t> load(16, 37);
  EXPECT_EQ(plan_expert_placement(load, ep_owners(16, 4), 4, {4, 0}).replicas(), 0);
  EXPECT_EQ(plan_expert_placement(std::vector<int64_t>(16, 0), ep_owners(16, 4), 4, {4, 0})
                .replicas(),
            0);
}

// The sweep: ranks × experts × skew × budgets, random loads.
TEST(ExpertPlacement, SweepDeterministicWithinBudgetsAndOnlyHelpful) {
  int with_replicas = 0;
  for (int W : {2, 3, 4, 8}) {
    for (int64_t per_rank : {1, 2, 4}) {
      const int64_t E = W * per_rank;
      for (double s : {0.0, 0.8, 1.2, 1.6}) {
        for (int m : {0, 1, 2, 3}) {
          for (int t : {0, 1, 2}) {
            const unsigned seed = static_cast<unsigned>(W * 1000 + E * 10 + m + 7 * t);
            const std::vector<int64_t> load = zipf_load(E, s, 64 * E, seed);
            const std::vector<int> owner = ep_owners(E, W);
            const ExpertPlacement p = plan_expert_placement(load, owner, W, {m, t});
            const ExpertPlacement q = plan_expert_placement(load, owner, W, {m, t});
            ASSERT_EQ(p.holders, q.holders);
            ASSERT_EQ(p.slots, q.slots);
            ASSERT_EQ(p.hash(), q.hash());
            // Budgets: replicas received ≤ min(m, t), copies sent ≤ t.
            std::vector<int> sent(W, 0), received(W, 0);
            for (int64_t e = 0; e < E; ++e) {
              ASSERT_TRUE(std::binary_search(p.holders[e].begin(), p.holders[e].end(), owner[e]));
              for (int r : p.holders[e]) {
                if (r == owner[e]) continue;
                ++sent[owner[e]];
                ++received[r];
              }
            }
            for (int r = 0; r < W; ++r) {
              ASSERT_LE(received[r], t > 0 ? std::min(m, t) : m);
              if (t > 0) {
                ASSERT_LE(sent[r], t);
              }
              ASSERT_EQ(static_cast<int64_t>(p.slots[r].size()), p.owned[r] + received[r]);
            }
            // Helpful: the plan's peak is below the owners' when it placed anything, and
            // removing any one replica would raise it.
            const std::pair<int64_t, int64_t> planned = peak(predicted_rank_load(p, load));
            std::vector<std::vector<int>> owners_only(E);
            for (int64_t e = 0; e < E; ++e) owners_only[e] = {owner[e]};
            const std::pair<int64_t, int64_t> before =
                peak(predicted_rank_load(make_placement(owner, owners_only, W), load));
            if (p.replicas() > 0) {
              ++with_replicas;
              ASSERT_LT(planned, before);
            } else {
              ASSERT_EQ(planned, before);
            }
            for (int64_t e = 0; e < E; ++e) {
              for (int r : p.holders[e]) {
                if (r == owner[e]) continue;
                std::vector<std::vector<int>> fewer = p.holders;
                std::erase(fewer[e], r);
                ASSERT_GT(peak(predicted_rank_load(make_placement(owner, fewer, W), load)),
                          planned);
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(with_replicas, 100);
}

TEST(ExpertPlacement, HashIsPinnedAndSensitive) {
  const ExpertPlacement p = make_placement({0, 0, 1, 1}, {{0, 1}, {0}, {1}, {0, 1}}, 2);
  EXPECT_EQ(p.hash(), make_placement({0, 0, 1, 1}, {{1, 0, 0}, {0}, {1}, {1, 0}}, 2).hash());
  EXPECT_NE(p.hash(), make_placement({0, 0, 1, 1}, {{0, 1}, {0}, {1}, {1}}, 2).hash());
  EXPECT_NE(p.hash(), make_placement({0, 0, 1, 1}, {{0}, {0, 1}, {1}, {0, 1}}, 2).hash());
  // The value itself, so that a change of the hash across builds or machines shows.
  EXPECT_EQ(p.hash(), 0xa6496459b5e630e4ull) << std::hex << p.hash();
}

TEST(ExpertPlacement, QuotasSplitEvenlyRemainderToLowerRanks) {
  EXPECT_EQ(replica_quota(10, 3, 0), 4);
  EXPECT_EQ(replica_quota(10, 3, 1), 3);
  EXPECT_EQ(replica_quota(10, 3, 2), 3);
  EXPECT_EQ(replica_quota(0, 2, 1), 0);
}

TEST(ReplicaRouting, ConservesRowsFillsQuotasAndServesLocalFirst) {
  std::mt19937 rng(3);
  for (int W : {2, 4, 8}) {
    for (int trial = 0; trial < 50; ++trial) {
      const int64_t E = 2 * W;
      std::vector<std::vector<int>> holders(E);
      const std::vector<int> owner = ep_owners(E, W);
      for (int64_t e = 0; e < E; ++e) {
        holders[e] = {owner[e]};
        for (int r = 0; r < W; ++r)
          if (rng() % 3 == 0) holders[e].push_back(r);
      }
      const ExpertPlacement p = make_placement(owner, holders, W);
      std::vector<int64_t> counts(W * E);
      for (int64_t& c : counts) c = rng() % 4 == 0 ? 0 : rng() % 40;
      std::vector<int> node(W);
      for (int r = 0; r < W; ++r) node[r] = r / 2;
      const ReplicaRoutes routes = route_to_replicas(p, counts, node);
      EXPECT_EQ(routes.rows, route_to_replicas(p, counts, node).rows);
      for (int64_t e = 0; e < E; ++e) {
        const int64_t n = static_cast<int64_t>(p.holders[e].size());
        int64_t load = 0;
        for (int s = 0; s < W; ++s) load += counts[s * E + e];
        for (int s = 0; s < W; ++s) {  // every source's rows go somewhere, once
          int64_t sent = 0;
          for (int64_t i = 0; i < n; ++i) sent += routes.to(p, s, e, i);
          ASSERT_EQ(sent, counts[s * E + e]);
        }
        for (int64_t i = 0; i < n; ++i) {  // every holder computes its quota
          int64_t got = 0;
          for (int s = 0; s < W; ++s) got += routes.to(p, s, e, i);
          ASSERT_EQ(got, replica_quota(load, n, i));
          const int h = p.holders[e][i];  // a holder keeps what it can of its own rows
          ASSERT_EQ(routes.to(p, h, e, i), std::min(counts[h * E + e], replica_quota(load, n, i)));
        }
      }
    }
  }
}

TEST(ReplicaRouting, PrefersTheSourcesNode) {
  // Expert 0 held by ranks 0 (node 0), 2 and 3 (node 1); only rank 1 (node 0) and rank 3 route.
  const ExpertPlacement p = make_placement({0, 1, 2, 3}, {{0, 2, 3}, {1}, {2}, {3}}, 4);
  std::vector<int64_t> counts(16, 0);
  counts[1 * 4 + 0] = 9;
  counts[3 * 4 + 0] = 3;
  const std::vector<int> node = {0, 0, 1, 1};
  const ReplicaRoutes routes = route_to_replicas(p, counts, node);
  // Quotas 4, 4, 4. Rank 3 keeps its 3; rank 1 fills rank 0 (its node) first, then 2 and 3.
  EXPECT_EQ(routes.to(p, 3, 0, 2), 3);
  EXPECT_EQ(routes.to(p, 1, 0, 0), 4);
  EXPECT_EQ(routes.to(p, 1, 0, 1), 4);
  EXPECT_EQ(routes.to(p, 1, 0, 2), 1);
}

TEST(LoadWindow, SumsTheLastWindowPushes) {
  LoadWindow w(2, 3);
  for (int64_t i = 1; i <= 5; ++i) w.push(std::vector<int64_t>{i, 10 * i});
  EXPECT_EQ(w.sum(), (std::vector<int64_t>{3 + 4 + 5, 30 + 40 + 50}));
  EXPECT_EQ(w.entries(), 3);
}

}  // namespace
}  // namespace moefold
