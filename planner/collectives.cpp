#include "planner/collectives.h"

#include <algorithm>
#include <set>

namespace moefold {

GroupSpan group_span(const RankLayout& layout, GroupKind kind, int ranks_per_node) {
  GroupSpan widest;
  for (const RankGroup& group : layout.groups_of(kind)) {
    std::set<int> nodes;
    for (int rank : group) nodes.insert(rank / std::max(1, ranks_per_node));
    const GroupSpan span{static_cast<int>(group.size()), static_cast<int>(nodes.size())};
    if (span.nodes > widest.nodes || (span.nodes == widest.nodes && span.size > widest.size)) {
      widest = span;
    }
  }
  return widest;
}

double collective_seconds(Collective kind, double bytes, const GroupSpan& group,
                          const ClusterSpec& cluster) {
  const int p = group.size;
  if (bytes <= 0) return 0;
  const LinkSpec& link = group.nodes > 1 ? cluster.inter_node : cluster.intra_node;
  if (kind == Collective::kSendRecv) return link.latency + bytes / link.bandwidth;
  if (p <= 1) return 0;
  const double steps = p - 1;
  const double share = bytes * steps / p;  // what one rank moves in one ring pass
  switch (kind) {
    case Collective::kAllGather:
    case Collective::kReduceScatter:
      return steps * link.latency + share / link.bandwidth;
    case Collective::kAllReduce:
      return 2 * (steps * link.latency + share / link.bandwidth);
    case Collective::kAllToAll: {
      // Peers on this rank's node take the fast link, the others the slow one, concurrently.
      const double per_node = double(p) / group.nodes;
      const double local = bytes * (per_node - 1) / p;
      const double remote = bytes * (p - per_node) / p;
      const LinkSpec& near = cluster.intra_node;
      const LinkSpec& far = cluster.inter_node;
      const double wire =
          std::max(local / (near.bandwidth * near.alltoall_efficiency),
                   remote > 0 ? remote / (far.bandwidth * far.alltoall_efficiency) : 0.0);
      return steps * link.latency + wire;
    }
    case Collective::kSendRecv:
      break;
  }
  return 0;
}

}  // namespace moefold
