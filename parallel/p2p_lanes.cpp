#include "parallel/p2p_lanes.h"

#include <algorithm>

#include "parallel/communicator.h"

namespace moefold {
namespace {

// Group-wide position of the link sender → receiver between ring neighbours: the link to the
// next rank before the link to the previous one, by sender (a two-rank group has one of each).
int link_order(int sender, int receiver, int size) {
  if (size == 2) return sender;
  return 2 * sender + (receiver == (sender + 1) % size ? 0 : 1);
}

}  // namespace

bool ring_neighbours(int rank, int peer, int size) {
  return size >= 2 && peer != rank &&
         (peer == (rank + 1) % size || peer == (rank + size - 1) % size);
}

std::vector<P2pLane> ring_p2p_lanes(int rank, int size) {
  std::vector<P2pLane> lanes;
  if (size < 2) return lanes;
  std::vector<int> neighbours = {(rank + 1) % size};
  if (size > 2) neighbours.push_back((rank + size - 1) % size);
  for (int peer : neighbours) {
    for (const auto& [sender, receiver] : {std::pair{rank, peer}, std::pair{peer, rank}}) {
      for (int lane = 0; lane < kP2pLanes; ++lane) {
        lanes.push_back(
            {sender, receiver, lane, link_order(sender, receiver, size) * kP2pLanes + lane});
      }
    }
  }
  std::sort(lanes.begin(), lanes.end(),
            [](const P2pLane& a, const P2pLane& b) { return a.order < b.order; });
  return lanes;
}

}  // namespace moefold
