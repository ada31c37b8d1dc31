// The point-to-point lanes between ring neighbours (parallel/p2p_lanes.h): each rank's list
// holds exactly the lanes to and from its neighbours, both ranks of a lane list it alike, and
// creating them in list order, each creation blocking until both of its ranks reach it (as
// ncclCommInitRank does), finishes for every group size.
#include "parallel/p2p_lanes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "parallel/communicator.h"

namespace moefold {
namespace {

TEST(P2pLanes, EachRankHasTheLanesToAndFromItsNeighboursListedAlikeAtBothEnds) {
  EXPECT_TRUE(ring_p2p_lanes(0, 1).empty());
  for (int size = 2; size <= 9; ++size) {
    std::map<int, P2pLane> by_order;
    for (int rank = 0; rank < size; ++rank) {
      const std::vector<P2pLane> lanes = ring_p2p_lanes(rank, size);
      EXPECT_EQ(lanes.size(), size == 2 ? 2u * kP2pLanes : 4u * kP2pLanes) << "size " << size;
      std::set<std::tuple<int, int, int>> seen;
      for (const P2pLane& l : lanes) {
        EXPECT_TRUE(l.sender == rank || l.receiver == rank);
        const int peer = l.sender == rank ? l.receiver : l.sender;
        EXPECT_TRUE(ring_neighbours(rank, peer, size)) << rank << " and " << peer;
        EXPECT_TRUE(seen.insert({l.sender, l.receiver, l.lane}).second) << "listed twice";
        const auto [it, inserted] = by_order.emplace(l.order, l);
        EXPECT_EQ(it->second, l) << "order " << l.order << " names two lanes";
        const std::vector<P2pLane> other = ring_p2p_lanes(peer, size);
        EXPECT_NE(std::find(other.begin(), other.end(), l), other.end())
            << "rank " << peer << " does not list a lane of rank " << rank;
      }
    }
  }
}

TEST(P2pLanes, CreatingThemInListOrderNeverWaitsInACycle) {
  for (int size = 2; size <= 9; ++size) {
    std::vector<std::vector<P2pLane>> lists(size);
    std::vector<size_t> next(size, 0);
    for (int rank = 0; rank < size; ++rank) lists[rank] = ring_p2p_lanes(rank, size);
    bool progress = true;
    while (progress) {
      progress = false;
      for (int rank = 0; rank < size; ++rank) {
        if (next[rank] == lists[rank].size()) continue;
        const P2pLane& l = lists[rank][next[rank]];
        const int peer = l.sender == rank ? l.receiver : l.sender;
        if (next[peer] < lists[peer].size() && lists[peer][next[peer]] == l) {
          ++next[rank];
          ++next[peer];
          progress = true;
        }
      }
    }
    for (int rank = 0; rank < size; ++rank) {
      EXPECT_EQ(next[rank], lists[rank].size())
          << "size " << size << ": rank " << rank << " waits forever";
    }
  }
}

TEST(P2pLanes, NeighboursAreTheRingsOnly) {
  EXPECT_TRUE(ring_neighbours(0, 1, 2));
  EXPECT_TRUE(ring_neighbours(0, 3, 4));
  EXPECT_FALSE(ring_neighbours(0, 2, 4));
  EXPECT_FALSE(ring_neighbours(0, 0, 1));
  EXPECT_FALSE(ring_neighbours(1, 1, 3));
}

}  // namespace
}  // namespace moefold
