// A cluster file (clusters/*.yaml): what the planner knows about one kind of machine. The same
// constants serve every model on that cluster; nothing in it is per model.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold {

// One class of link between two ranks, for the alpha-beta model: a message of b bytes takes
// latency + b / bandwidth.
struct LinkSpec {
  double bandwidth = 0;  // bytes/s per rank and direction
  double latency = 0;    // seconds per message
  // Fraction of `bandwidth` an all-to-all reaches: it is many small point-to-point messages at
  // once, where the ring collectives stream one.
  double alltoall_efficiency = 1;
};

struct ClusterSpec {
  std::string name;
  std::string source;            // the file, for messages
  int ranks_per_node = 1;        // GPUs (or MPI ranks) that share the fast intra-node link
  int compute_bytes = 4;         // bytes of a weight / activation element as computed (bf16: 2)
  bool master_weights = false;   // an extra float32 copy of every weight (bf16 training)
  double peak_flops = 0;         // dense FLOP/s of one rank, the MFU denominator
  double memory_bytes = 0;       // usable memory of one rank
  double memory_bandwidth = 0;   // bytes/s of one rank, for the memory-bound (element-wise) ops
  double elementwise_efficiency = 1;  // reached fraction of memory_bandwidth
  // GEMM efficiency (fraction of peak_flops) by the GEMM's smallest dimension min(m, n, k),
  // interpolated linearly in log2 of the dimension, flat beyond the ends. Sorted by dimension.
  std::vector<std::pair<double, double>> gemm_efficiency;
  double attention_efficiency = 0;  // fraction of peak_flops of the fused attention core
  double kernel_overhead = 0;       // seconds per launched kernel (about 30 per layer and pass)
  LinkSpec intra_node;              // NVLink / shared memory
  LinkSpec inter_node;              // InfiniBand
  double memory_reserved = 0;       // bytes per rank the runtime takes (context, allocator slack)
};

// Reads and checks a cluster file; errors name the file, line and key, e.g.
// "clusters/x.yaml:7: links.inter_node.bandwidth: must be > 0".
absl::StatusOr<ClusterSpec> load_cluster(const std::string& path);
absl::StatusOr<ClusterSpec> parse_cluster_string(const std::string& yaml_text,
                                                 const std::string& source_name);

// The efficiency curve at a GEMM whose smallest dimension is `dimension`.
double gemm_efficiency(const ClusterSpec& cluster, double dimension);

}  // namespace moefold
