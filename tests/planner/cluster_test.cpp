// Cluster files: the committed ones load; mistakes are one line naming file, line and key.
#include <gtest/gtest.h>

#include <filesystem>

#include "planner/cluster.h"
#include "planner/collectives.h"
#include "planner_test_util.h"

namespace moefold {
namespace {

constexpr const char* kValid = R"(name: toy
ranks_per_node: 4
precision: bf16
device:
  peak_flops: 100.0e12
  memory_bytes: 1.0e10
  memory_bandwidth: 1.0e12
  attention_efficiency: 0.5
  gemm_efficiency: [[64, 0.2], [1024, 0.8]]
links:
  intra_node: {bandwidth: 100.0e9, latency: 1.0e-6}
  inter_node: {bandwidth: 10.0e9, latency: 1.0e-5, alltoall_efficiency: 0.5}
)";

TEST(Cluster, CommittedFilesLoad) {
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(testing::kSourceDir + "/clusters")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    auto cluster = load_cluster(entry.path().string());
    ASSERT_TRUE(cluster.ok()) << cluster.status().message();
    EXPECT_GT(cluster->peak_flops, 0);
    ++seen;
  }
  EXPECT_GE(seen, 3);
  const ClusterSpec h100 = testing::cluster_file("dgx_h100.yaml");
  EXPECT_EQ(h100.ranks_per_node, 8);
  EXPECT_DOUBLE_EQ(h100.peak_flops, 989.5e12);
  EXPECT_DOUBLE_EQ(h100.memory_bytes, 80.0 * (1 << 30));
  EXPECT_DOUBLE_EQ(h100.intra_node.bandwidth, 450e9);
  EXPECT_DOUBLE_EQ(h100.inter_node.bandwidth, 400e9 / 8);
  EXPECT_EQ(h100.compute_bytes, 2);
}

TEST(Cluster, ParsesEveryKey) {
  auto c = parse_cluster_string(kValid, "toy.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->name, "toy");
  EXPECT_EQ(c->ranks_per_node, 4);
  EXPECT_TRUE(c->master_weights);
  EXPECT_DOUBLE_EQ(c->inter_node.alltoall_efficiency, 0.5);
  EXPECT_DOUBLE_EQ(c->intra_node.alltoall_efficiency, 1.0);  // default
  EXPECT_DOUBLE_EQ(gemm_efficiency(*c, 16), 0.2);            // flat beyond the ends
  EXPECT_DOUBLE_EQ(gemm_efficiency(*c, 4096), 0.8);
  EXPECT_NEAR(gemm_efficiency(*c, 256), 0.2 + 0.6 * 0.5, 1e-12);  // halfway in log2
}

TEST(Cluster, ErrorsNameFileLineAndKey) {
  std::string text = kValid;
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return parse_cluster_string(t, "bad.yaml").status();
  };
  absl::Status s = replace("bandwidth: 10.0e9", "bandwidth: -1");
  EXPECT_EQ(s.message(), "bad.yaml:12: links.inter_node.bandwidth: must be > 0");
  s = replace("  attention_efficiency: 0.5\n", "  attention_eficiency: 0.5\n");
  EXPECT_EQ(s.message(), "bad.yaml:5: device.attention_efficiency: missing");
  s = replace("name: toy", "name: toy\ncolour: red");
  EXPECT_EQ(s.message(), "bad.yaml:2: colour: unknown key");
  s = replace("precision: bf16", "precision: fp8");
  EXPECT_EQ(s.message(), "bad.yaml:3: precision: expected bf16 or fp32");
  s = replace("[[64, 0.2], [1024, 0.8]]", "[[1024, 0.2], [64, 0.8]]");
  EXPECT_EQ(s.message(), "bad.yaml:9: device.gemm_efficiency: dimensions must increase");
  EXPECT_EQ(load_cluster("/nonexistent.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(Collectives, AlphaBetaByLinkClass) {
  auto c = parse_cluster_string(kValid, "toy.yaml");
  ASSERT_TRUE(c.ok());
  const GroupSpan node{4, 1}, two_nodes{8, 2};
  // Ring all-gather of 4 MB over 4 ranks in a node: 3 latencies + 3/4 of the bytes.
  EXPECT_DOUBLE_EQ(collective_seconds(Collective::kAllGather, 4e6, node, *c), 3e-6 + 3e6 / 100e9);
  EXPECT_DOUBLE_EQ(collective_seconds(Collective::kAllReduce, 4e6, node, *c),
                   2 * (3e-6 + 3e6 / 100e9));
  // Across nodes the inter-node link carries the ring.
  EXPECT_DOUBLE_EQ(collective_seconds(Collective::kReduceScatter, 8e6, two_nodes, *c),
                   7e-5 + 7e6 / 10e9);
  // All-to-all over 2 nodes of 4: 3/8 of the bytes stay in the node, 4/8 leave it.
  EXPECT_DOUBLE_EQ(collective_seconds(Collective::kAllToAll, 8e6, two_nodes, *c),
                   7e-5 + std::max(3e6 / 100e9, 4e6 / (10e9 * 0.5)));
  EXPECT_DOUBLE_EQ(collective_seconds(Collective::kSendRecv, 1e6, node, *c), 1e-6 + 1e6 / 100e9);
  EXPECT_EQ(collective_seconds(Collective::kAllReduce, 1e6, GroupSpan{1, 1}, *c), 0);
}

TEST(Collectives, GroupSpanFromTheLayout) {
  ParallelConfig p;
  p.tensor_model_parallel_size = 2;
  p.pipeline_model_parallel_size = 2;
  auto layout = build_rank_layout(p, 16);  // DP 4
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(group_span(*layout, GroupKind::kTp, 8).nodes, 1);
  EXPECT_EQ(group_span(*layout, GroupKind::kDp, 8).nodes, 1);  // ranks 0,2,4,6
  EXPECT_EQ(group_span(*layout, GroupKind::kPp, 8).nodes, 2);  // ranks 0 and 8
  EXPECT_EQ(group_span(*layout, GroupKind::kDp, 4).nodes, 2);
}

}  // namespace
}  // namespace moefold
