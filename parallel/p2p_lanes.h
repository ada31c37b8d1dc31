// The lanes of point-to-point messages between the ring neighbours of a group (communicator.h:
// over NCCL, one two-rank communicator per lane), and the order in which a rank creates its
// lanes. Creating a lane blocks until both of its ranks create it, so every rank creates its
// lanes in one global order (by lane_order): the lowest lane not yet created always has both
// of its ranks waiting on it, and nothing waits in a cycle. Pure, so the CPU tests check it.
#pragma once

#include <vector>

namespace moefold {

struct P2pLane {
  int sender = 0;
  int receiver = 0;
  int lane = 0;  // p2p_lane of the tags it carries
  int order = 0;  // position in the group-wide creation order
  bool operator==(const P2pLane&) const = default;
};

// The lanes `rank` of a group of `size` ranks takes part in: to and from its ring neighbours
// (rank ± 1 mod size; the one neighbour of a two-rank group), each lane once, sorted by order.
// None for a group of one.
std::vector<P2pLane> ring_p2p_lanes(int rank, int size);

// Whether `peer` is a ring neighbour of `rank` (its messages travel in lanes).
bool ring_neighbours(int rank, int peer, int size);

}  // namespace moefold
