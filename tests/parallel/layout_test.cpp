#include "parallel/layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "parallel/layout_report.h"

namespace moefold {
namespace {

using Groups = std::vector<RankGroup>;

ParallelConfig make_config(int tp, int cp, int pp, int ep, int etp,
                           std::string order = "tp-cp-ep-dp-pp") {
  ParallelConfig config;
  config.tensor_model_parallel_size = tp;
  config.context_parallel_size = cp;
  config.pipeline_model_parallel_size = pp;
  config.expert_model_parallel_size = ep;
  config.expert_tensor_parallel_size = etp;
  config.order = std::move(order);
  return config;
}

RankLayout build_or_die(const ParallelConfig& config, int world_size) {
  absl::StatusOr<RankLayout> layout = build_rank_layout(config, world_size);
  EXPECT_TRUE(layout.ok()) << layout.status();
  return *std::move(layout);
}

TEST(RankLayoutTest, WorkedExampleFromIssue) {
  const RankLayout layout = build_or_die(make_config(2, 2, 2, 4, 1), 16);
  EXPECT_EQ(layout.groups_of(GroupKind::kTp),
            (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kCp),
            (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kDp),
            (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kPp),
            (Groups{{0, 8}, {1, 9}, {2, 10}, {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kEp),
            (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kEdp),
            (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kDpCp),
            (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}, {8, 10, 12, 14}, {9, 11, 13, 15}}));
  // The rest follows from the same algebra.
  EXPECT_EQ(layout.groups_of(GroupKind::kTpCp),
            (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kTpCpDp),
            (Groups{{0, 1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11, 12, 13, 14, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kEtp).size(), 16u);
  EXPECT_EQ(layout.groups_of(GroupKind::kEtpEp), layout.groups_of(GroupKind::kEp));
  EXPECT_EQ(layout.groups_of(GroupKind::kEmbedding), layout.groups_of(GroupKind::kPp));

  const RankCoordinates& c = layout.coordinates[11];
  EXPECT_EQ(c, (RankCoordinates{.world_rank = 11, .world_size = 16,
                                .tp_rank = 1, .tp_size = 2, .cp_rank = 1, .cp_size = 2,
                                .dp_rank = 0, .dp_size = 2, .pp_rank = 1, .pp_size = 2,
                                .etp_rank = 0, .etp_size = 1, .ep_rank = 3, .ep_size = 4,
                                .edp_rank = 0, .edp_size = 2}));
  EXPECT_EQ(*layout.group_of(GroupKind::kDpCp, 11), (RankGroup{9, 11, 13, 15}));
}

TEST(RankLayoutTest, EmbeddingGroupIsFirstAndLastStage) {
  const RankLayout layout = build_or_die(make_config(1, 1, 4, 1, 0), 8);
  EXPECT_EQ(layout.groups_of(GroupKind::kEmbedding), (Groups{{0, 6}, {1, 7}}));
  EXPECT_EQ(layout.group_of(GroupKind::kEmbedding, 2), nullptr);
  EXPECT_EQ(*layout.group_of(GroupKind::kEmbedding, 7), (RankGroup{1, 7}));
}

TEST(RankLayoutTest, EtpDefaultsToTp) {
  const RankLayout layout = build_or_die(make_config(2, 1, 1, 2, 0), 8);
  EXPECT_EQ(layout.coordinates[0].etp_size, 2);
  EXPECT_EQ(layout.coordinates[0].edp_size, 2);
  EXPECT_EQ(layout.groups_of(GroupKind::kEtp), layout.groups_of(GroupKind::kTp));
}

TEST(RankLayoutTest, MegatronDocstringExampleWithTpPpDpOrder) {
  // parallel_state.py's example: 16 ranks, TP 2, PP 4 -> DP 2, in the default order.
  const RankLayout layout = build_or_die(make_config(2, 1, 4, 1, 0), 16);
  EXPECT_EQ(layout.groups_of(GroupKind::kDp),
            (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kPp),
            (Groups{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}));
}

TEST(RankLayoutTest, OrderWithPipelineFirst) {
  // "pp-tp-cp-ep-dp": PP is fastest, so each pipeline runs over adjacent ranks.
  const RankLayout layout = build_or_die(make_config(2, 1, 2, 2, 1, "pp-tp-cp-ep-dp"), 8);
  EXPECT_EQ(layout.groups_of(GroupKind::kPp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kTp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(layout.groups_of(GroupKind::kEp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(layout.order, "pp-tp-cp-ep-dp");
}

TEST(RankLayoutTest, MissingSizeOneAxesAreAppended) {
  const RankLayout layout = build_or_die(make_config(2, 1, 1, 1, 0, "tp-dp"), 4);
  EXPECT_EQ(layout.order, "tp-dp-cp-ep-pp");
  EXPECT_EQ(layout.groups_of(GroupKind::kDp), (Groups{{0, 2}, {1, 3}}));
}

TEST(RankLayoutTest, MaskedOrthogonalGroupsMatchesMegatronExample) {
  // Sizes tp 2, pp 3, dp 4 in order tp-pp-dp; mask dp.
  EXPECT_EQ(masked_orthogonal_groups({2, 3, 4}, {false, false, true}),
            (Groups{{0, 6, 12, 18}, {1, 7, 13, 19}, {2, 8, 14, 20},
                    {3, 9, 15, 21}, {4, 10, 16, 22}, {5, 11, 17, 23}}));
}

// Checks the algebra of one layout: partitions, sizes, member order, orthogonality.
void check_layout_algebra(const ParallelConfig& config, int world) {
  SCOPED_TRACE(::testing::Message() << "world " << world << " tp " << config.tensor_model_parallel_size
                                    << " cp " << config.context_parallel_size << " pp "
                                    << config.pipeline_model_parallel_size << " ep "
                                    << config.expert_model_parallel_size << " etp "
                                    << config.expert_tensor_parallel() << " order "
                                    << config.order);
  const RankLayout layout = build_or_die(config, world);
  const int tp = config.tensor_model_parallel_size, cp = config.context_parallel_size;
  const int pp = config.pipeline_model_parallel_size, ep = config.expert_model_parallel_size;
  const int etp = config.expert_tensor_parallel();
  const int dp = world / (tp * cp * pp), edp = world / (etp * ep * pp);
  const std::vector<std::pair<GroupKind, int>> expected_sizes = {
      {GroupKind::kTp, tp},          {GroupKind::kCp, cp},
      {GroupKind::kDp, dp},          {GroupKind::kPp, pp},
      {GroupKind::kDpCp, dp * cp},   {GroupKind::kTpCp, tp * cp},
      {GroupKind::kTpCpDp, tp * cp * dp}, {GroupKind::kTpPp, tp * pp},
      {GroupKind::kEp, ep},          {GroupKind::kEtp, etp},
      {GroupKind::kEdp, edp},        {GroupKind::kEtpEp, etp * ep},
      {GroupKind::kEtpEpPp, etp * ep * pp}};
  for (const auto& [kind, size] : expected_sizes) {
    // Every rank in exactly one group of each kind, every group of the expected size.
    std::vector<int> seen(world, 0);
    for (const RankGroup& group : layout.groups_of(kind)) {
      ASSERT_EQ(static_cast<int>(group.size()), size) << group_kind_name(kind);
      for (int r : group) {
        ASSERT_TRUE(r >= 0 && r < world);
        ++seen[r];
      }
    }
    ASSERT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }))
        << group_kind_name(kind);
  }
  // Orthogonal axes of one side meet in exactly one rank when their groups share the rest.
  auto meet_once = [&](GroupKind a, GroupKind b) {
    for (int r = 0; r < world; ++r) {
      const RankGroup& ga = *layout.group_of(a, r);
      const RankGroup& gb = *layout.group_of(b, r);
      int common = 0;
      for (int x : ga) common += std::count(gb.begin(), gb.end(), x);
      ASSERT_EQ(common, 1) << group_kind_name(a) << " x " << group_kind_name(b) << " at " << r;
    }
  };
  for (auto [a, b] : std::vector<std::pair<GroupKind, GroupKind>>{
           {GroupKind::kTp, GroupKind::kDp},   {GroupKind::kTp, GroupKind::kCp},
           {GroupKind::kCp, GroupKind::kDp},   {GroupKind::kTp, GroupKind::kPp},
           {GroupKind::kDp, GroupKind::kPp},   {GroupKind::kTpCp, GroupKind::kDp},
           {GroupKind::kEtp, GroupKind::kEp},  {GroupKind::kEp, GroupKind::kEdp},
           {GroupKind::kEtpEp, GroupKind::kEdp}, {GroupKind::kEdp, GroupKind::kPp},
           {GroupKind::kTpCpDp, GroupKind::kPp}, {GroupKind::kEtpEp, GroupKind::kPp}}) {
    meet_once(a, b);
  }
  // Combined groups are unions of their parts; positions follow the coordinates.
  for (int r = 0; r < world; ++r) {
    const RankCoordinates& c = layout.coordinates[r];
    auto position = [&](GroupKind kind) {
      const RankGroup& g = *layout.group_of(kind, r);
      return static_cast<int>(std::find(g.begin(), g.end(), r) - g.begin());
    };
    ASSERT_EQ(position(GroupKind::kTp), c.tp_rank);
    ASSERT_EQ(position(GroupKind::kCp), c.cp_rank);
    ASSERT_EQ(position(GroupKind::kDp), c.dp_rank);
    ASSERT_EQ(position(GroupKind::kPp), c.pp_rank);
    ASSERT_EQ(position(GroupKind::kEtp), c.etp_rank);
    ASSERT_EQ(position(GroupKind::kEp), c.ep_rank);
    ASSERT_EQ(position(GroupKind::kEdp), c.edp_rank);
    std::set<int> expected;
    for (int x : *layout.group_of(GroupKind::kDp, r)) {
      for (int y : *layout.group_of(GroupKind::kCp, x)) expected.insert(y);
    }
    const RankGroup& dp_cp = *layout.group_of(GroupKind::kDpCp, r);
    ASSERT_EQ(std::set<int>(dp_cp.begin(), dp_cp.end()), expected);
    // Every member of this rank's ETP x EP group shares its EDP coordinate and stage.
    for (int x : *layout.group_of(GroupKind::kEtpEp, r)) {
      ASSERT_EQ(layout.coordinates[x].edp_rank, c.edp_rank);
      ASSERT_EQ(layout.coordinates[x].pp_rank, c.pp_rank);
    }
    // Within a stage, attention (tp,cp,dp) and expert (etp,ep,edp) coordinates are bijective.
    ASSERT_EQ(c.tp_size * c.cp_size * c.dp_size, c.etp_size * c.ep_size * c.edp_size);
  }
  // Identical pipeline groups on both sides: the expert-side stage of each rank is its PP
  // group position, and the expert model-parallel group spans whole pipelines.
  for (const RankGroup& g : layout.groups_of(GroupKind::kEtpEpPp)) {
    for (int x : g) {
      for (int y : *layout.group_of(GroupKind::kPp, x)) {
        ASSERT_NE(std::find(g.begin(), g.end(), y), g.end());
      }
    }
  }
}

std::vector<int> divisors(int n) {
  std::vector<int> result;
  for (int d = 1; d <= n; ++d) {
    if (n % d == 0) result.push_back(d);
  }
  return result;
}

TEST(RankLayoutTest, SweepSmallWorldsAllShapes) {
  int layouts = 0;
  for (int world : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32}) {
    for (int pp : divisors(world)) {
      for (int tp : divisors(world / pp)) {
        for (int cp : divisors(world / (pp * tp))) {
          for (int ep : divisors(world / pp)) {
            for (int etp : divisors(world / (pp * ep))) {
              check_layout_algebra(make_config(tp, cp, pp, ep, etp), world);
              ++layouts;
              if (::testing::Test::HasFatalFailure()) return;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(layouts, 1000);
}

TEST(RankLayoutTest, SweepOtherOrders) {
  for (const char* order : {"tp-cp-dp-ep-pp", "tp-dp-cp-ep-pp", "cp-tp-ep-dp-pp",
                            "ep-dp-tp-cp-pp", "dp-ep-cp-tp-pp"}) {
    for (int world : {8, 16, 24}) {
      for (int pp : {1, 2}) {
        for (int tp : divisors(world / pp)) {
          for (int ep : divisors(world / pp)) {
            for (int etp : divisors(world / (pp * ep))) {
              check_layout_algebra(make_config(tp, 1, pp, ep, etp, order), world);
              if (::testing::Test::HasFatalFailure()) return;
            }
          }
        }
      }
    }
  }
}

TEST(RankLayoutTest, SweepLargeWorlds) {
  for (int world : {512, 1024, 2048, 4096}) {
    for (auto [tp, cp, pp, ep, etp] : std::vector<std::array<int, 5>>{
             {8, 1, 8, 8, 1}, {4, 2, 4, 16, 1}, {2, 4, 16, 32, 2}, {8, 8, 8, 64, 1},
             {1, 1, 1, 512, 1}, {8, 2, 32, 2, 8}}) {
      if (world % (tp * cp * pp) != 0 || world % (etp * ep * pp) != 0) continue;
      check_layout_algebra(make_config(tp, cp, pp, ep, etp), world);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

void expect_error(const ParallelConfig& config, int world, const std::string& needle) {
  const absl::Status status = build_rank_layout(config, world).status();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find(needle), std::string::npos)
      << "message: " << status.message();
  EXPECT_EQ(validate_parallel_config(config, world), status);
}

TEST(RankLayoutValidationTest, ClearErrors) {
  expect_error(make_config(2, 1, 1, 1, 0), 3,
               "world size 3 is not divisible by tensor_model_parallel_size 2");
  expect_error(make_config(2, 2, 2, 1, 0), 12, "= 8");
  expect_error(make_config(1, 1, 2, 3, 1), 8,
               "expert_tensor_parallel_size 1 x expert_model_parallel_size 3 = 3 does not "
               "divide the 4 ranks");
  expect_error(make_config(0, 1, 1, 1, 0), 4, "parallel.tensor_model_parallel_size is 0");
  expect_error(make_config(1, -1, 1, 1, 0), 4, "parallel.context_parallel_size is -1");
  expect_error(make_config(1, 1, 0, 1, 0), 4, "parallel.pipeline_model_parallel_size is 0");
  expect_error(make_config(1, 1, 1, 0, 0), 4, "parallel.expert_model_parallel_size is 0");
  expect_error(make_config(1, 1, 1, 1, -2), 4, "parallel.expert_tensor_parallel_size is -2");
  expect_error(make_config(1, 1, 1, 1, 0), 0, "world size is 0");
  expect_error(make_config(1, 1, 1, 1, 0, "tp-xp-dp"), 4, "unknown axis \"xp\"");
  expect_error(make_config(1, 1, 1, 1, 0, "tp-dp-tp"), 4, "names axis \"tp\" twice");
  expect_error(make_config(1, 1, 1, 1, 0, ""), 4, "unknown axis \"\"");
  expect_error(make_config(1, 1, 1, 2, 1, "tp-dp-pp"), 4, "leaves out axis \"ep\"");
  // PP not last and a different expert DP size: Megatron-Core rejects this too.
  expect_error(make_config(2, 1, 2, 1, 1, "tp-pp-dp"), 8, "does not end with pp");
  // PP not last with equal DP sizes but different strides before it.
  expect_error(make_config(2, 1, 2, 2, 1, "tp-pp-ep-dp"), 8, "different pipeline groups");
  ParallelConfig vpp = make_config(1, 1, 1, 1, 0);
  vpp.virtual_pipeline_model_parallel_size = 2;
  expect_error(vpp, 4, "virtual_pipeline_model_parallel_size 2 needs");
}

TEST(RankLayoutValidationTest, OrderIsCaseInsensitive) {
  EXPECT_TRUE(build_rank_layout(make_config(2, 1, 1, 1, 0, "TP-CP-EP-DP-PP"), 4).ok());
}

TEST(ModelDivisibilityTest, Errors) {
  ParallelConfig config = make_config(2, 1, 2, 4, 1);
  EXPECT_TRUE(validate_model_divisibility(config, 4, 8, 2, 8, 1024).ok());
  EXPECT_TRUE(validate_model_divisibility(make_config(2, 1, 2, 1, 0), 4, 8, 2, 0, 1024).ok());
  auto message = [&](int layers, int heads, int groups, int experts, int vocab) {
    return std::string(
        validate_model_divisibility(config, layers, heads, groups, experts, vocab).message());
  };
  EXPECT_EQ(message(5, 8, 2, 8, 1024),
            "num_layers 5 is not divisible by pipeline_model_parallel_size 2");
  EXPECT_EQ(message(1, 8, 2, 8, 1024),
            "num_layers 1 is fewer than pipeline_model_parallel_size 2 stages");
  EXPECT_EQ(message(4, 7, 2, 8, 1024),
            "num_attention_heads 7 is not divisible by tensor_model_parallel_size 2");
  EXPECT_EQ(message(4, 8, 1, 8, 1024),
            "num_query_groups 1 is not divisible by tensor_model_parallel_size 2");
  EXPECT_EQ(message(4, 8, 2, 6, 1024),
            "num_experts 6 is not divisible by expert_model_parallel_size 4");
  EXPECT_EQ(message(4, 8, 2, 0, 1024),
            "expert_model_parallel_size 4 needs an MoE model (num_experts is 0)");
  EXPECT_EQ(message(4, 8, 2, 8, 1023),
            "padded vocabulary size 1023 is not divisible by tensor_model_parallel_size 2");
  config.virtual_pipeline_model_parallel_size = 3;
  EXPECT_EQ(message(4, 8, 2, 8, 1024),
            "num_layers 4 is not divisible by pipeline_model_parallel_size 2 x "
            "virtual_pipeline_model_parallel_size 3 = 6");
}

TEST(LayoutReportTest, TableShowsCoordinatesAndGroups) {
  const RankLayout layout = build_or_die(make_config(2, 2, 2, 4, 1), 16);
  const std::string table = format_layout_table(layout);
  EXPECT_NE(table.find("attention side: TP 2 x CP 2 x DP 2 x PP 2"), std::string::npos);
  EXPECT_NE(table.find("expert side:    ETP 1 x EP 4 x EDP 2 x PP 2"), std::string::npos);
  EXPECT_NE(table.find("dp_cp     [0,2,4,6] [1,3,5,7] [8,10,12,14] [9,11,13,15]"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("ep        [0,1,2,3] [4,5,6,7] [8,9,10,11] [12,13,14,15]"),
            std::string::npos);
  // The row of rank 11: coordinates, then its tp, cp, dp, pp groups.
  const size_t row = table.find("\n  11 ");
  ASSERT_NE(row, std::string::npos) << table;
  const std::string line = table.substr(row + 1, table.find('\n', row + 1) - row - 1);
  EXPECT_EQ(line.substr(0, 48), "  11  1  1  0  1 |   0  3   0 | [10,11] [9,11]  ");
}

TEST(LayoutReportTest, JsonHasEveryRankAndGroup) {
  const RankLayout layout = build_or_die(make_config(1, 1, 2, 1, 0), 4);
  const std::string json = format_layout_json(layout);
  EXPECT_NE(json.find("\"world_size\": 4"), std::string::npos);
  EXPECT_NE(json.find("{\"rank\": 3, \"tp\": 0, \"cp\": 0, \"dp\": 1, \"pp\": 1, \"etp\": 0, "
                      "\"ep\": 0, \"edp\": 1, \"groups\": {\"tp\": [3], "),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"pp\": [[0,2], [1,3]]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"embedding\": [[0,2], [1,3]]\n"), std::string::npos) << json;
  // Braces and brackets balance.
  EXPECT_EQ(std::count(json.begin(), json.end(), '{'), std::count(json.begin(), json.end(), '}'));
  EXPECT_EQ(std::count(json.begin(), json.end(), '['), std::count(json.begin(), json.end(), ']'));
}

}  // namespace
}  // namespace moefold
