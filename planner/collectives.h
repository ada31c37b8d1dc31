// Alpha-beta times of collectives: a message of b bytes over a link takes latency + b/bandwidth;
// a group whose ranks share one node uses the intra-node link, otherwise the slower inter-node
// one carries the traffic that leaves the node.
#pragma once

#include "parallel/layout.h"
#include "planner/cluster.h"

namespace moefold {

enum class Collective { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kSendRecv };

struct GroupSpan {
  int size = 1;   // ranks in the group
  int nodes = 1;  // nodes they sit on
};

// The widest group of `kind` in the layout (most nodes spanned).
GroupSpan group_span(const RankLayout& layout, GroupKind kind, int ranks_per_node);

// Seconds for one collective. `bytes`: the whole buffer of one rank (all-reduce: the buffer;
// all-gather: the gathered output; reduce-scatter: the input; all-to-all: everything one rank
// sends, its own share included; send/recv: the message). Ring algorithms for the first three.
double collective_seconds(Collective kind, double bytes, const GroupSpan& group,
                          const ClusterSpec& cluster);

}  // namespace moefold
