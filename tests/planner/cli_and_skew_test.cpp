// `moefold plan` end to end (the binary, --json, --search, errors) and routing skew read from a
// run's metrics.jsonl.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "planner/routing_skew.h"
#include "planner/search.h"
#include "planner_test_util.h"

namespace moefold {
namespace {

struct Output {
  int code = 0;
  std::string text;
};

Output run(const std::string& arguments) {
  const std::string command = std::string(MOEFOLD_BINARY) + " plan " + arguments + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  Output out;
  std::array<char, 4096> buffer;
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) out.text += buffer.data();
  out.code = WEXITSTATUS(pclose(pipe));
  return out;
}

const std::string kMixtral = " --config " + testing::kSourceDir + "/configs/mixtral_8x22b.yaml" +
                             " --cluster " + testing::kSourceDir + "/clusters/dgx_h100.yaml";

TEST(PlanCommand, JsonHasTheKeysScriptsUse) {
  const Output out = run(kMixtral + " --gpus 128 --json");
  ASSERT_EQ(out.code, 0) << out.text;
  const nlohmann::json j = nlohmann::json::parse(out.text);
  for (const char* key : {"mfu", "tokens_per_s_per_gpu", "memory_bytes_per_gpu", "step_seconds",
                          "fits"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_GT(j["mfu"].get<double>(), 0.3);
  EXPECT_LT(j["mfu"].get<double>(), 0.7);
  EXPECT_EQ(j["layout"]["dp"], 8);
  EXPECT_EQ(j["layout"]["edp"], 2);
}

TEST(PlanCommand, TextReportAndErrors) {
  Output out = run(kMixtral + " --gpus 128");
  ASSERT_EQ(out.code, 0) << out.text;
  for (const char* line : {"optimizer state", "activations", "pipeline bubble", "EP dispatch",
                           "MFU"}) {
    EXPECT_NE(out.text.find(line), std::string::npos) << line;
  }
  out = run(kMixtral + " --gpus 96");
  EXPECT_EQ(out.code, 1);
  EXPECT_NE(out.text.find("moefold plan: error: "), std::string::npos) << out.text;
  EXPECT_EQ(std::count(out.text.begin(), out.text.end(), '\n'), 1) << out.text;
  out = run(kMixtral + " --gpus 128 --routing-imbalance 0.5");
  EXPECT_EQ(out.code, 1);
  out = run(kMixtral + " --gpus 128 --cluster /nonexistent.yaml");
  EXPECT_NE(out.text.find("/nonexistent.yaml"), std::string::npos);
}

TEST(PlanSearch, RanksValidFoldingsThatFit) {
  const Recipe recipe = testing::small_recipe();
  auto result = search_layouts(recipe, testing::cluster_file("this_machine.yaml"), 4, {});
  ASSERT_TRUE(result.ok()) << result.status().message();
  ASSERT_FALSE(result->fits.empty());
  EXPECT_GE(result->valid, static_cast<int>(result->fits.size()));
  bool folded = false, pipelined = false;
  for (size_t i = 0; i < result->fits.size(); ++i) {
    const Plan& p = result->fits[i];
    EXPECT_TRUE(p.fits);
    EXPECT_EQ(p.workload.tp * p.workload.cp * p.workload.pp * p.workload.dp, 4);
    if (i > 0) {
      EXPECT_LE(p.tokens_per_s_per_gpu, result->fits[i - 1].tokens_per_s_per_gpu);
    }
    folded |= p.workload.ep > 1 && p.workload.etp != p.workload.tp;
    pipelined |= p.workload.pp > 1;
  }
  EXPECT_TRUE(folded);
  EXPECT_TRUE(pipelined);
  const std::string table = format_search_table(*result, 3);
  EXPECT_NE(table.find("   1  TP"), std::string::npos) << table;
}

TEST(RoutingSkew, ReadFromMetricsAndGroupedByEpRank) {
  const std::string path = ::testing::TempDir() + "/skew_metrics.jsonl";
  {
    std::ofstream out(path);
    out << R"({"kind":"train","iteration":1,"moe":[{"layer":1,"tokens_per_expert":[30,10,10,10]},)"
        << R"({"layer":2,"tokens_per_expert":[10,10,10,10]}]})" << "\n";
    out << R"({"kind":"eval","iteration":1,"val_loss":3.0})" << "\n";
  }
  // EP 2: ranks hold {30,10} and {10,10}: max/mean 40/30; the balanced layer 1.
  auto ep2 = routing_imbalance_from_metrics(path, 4, 2);
  ASSERT_TRUE(ep2.ok()) << ep2.status().message();
  EXPECT_DOUBLE_EQ(*ep2, (40.0 / 30.0 + 1.0) / 2);
  auto ep4 = routing_imbalance_from_metrics(path, 4, 4);
  EXPECT_DOUBLE_EQ(*ep4, (30.0 / 15.0 + 1.0) / 2);
  EXPECT_FALSE(routing_imbalance_from_metrics(path, 8, 2).ok());  // expert count differs
  EXPECT_EQ(routing_imbalance_from_metrics(path + ".missing", 4, 2).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moefold
