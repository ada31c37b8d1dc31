// Against this machine: the demo recipe under every layout scripts/scaling_study.sh runs, as
// measured here (testdata/this_machine_measured.csv, rerun with scripts/scaling_study.sh --plan,
// see the file's header), and planned with clusters/this_machine.yaml. Tokens/s within 15%, rank
// 0's peak memory within 10%. No timing happens in the test: it compares against the table.
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "planner/plan.h"
#include "planner_test_util.h"

namespace moefold {
namespace {

struct MeasuredRow {
  std::string name;
  int ranks = 0;
  std::vector<std::string> overrides;
  double tokens_per_s = 0, peak_memory_mib = 0;
};

std::vector<MeasuredRow> measured_rows() {
  std::ifstream in(testing::kSourceDir + "/tests/planner/testdata/this_machine_measured.csv");
  std::vector<MeasuredRow> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#' || line.rfind("layout,", 0) == 0) continue;
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    if (f.size() != 5) throw std::runtime_error("bad row: " + line);
    MeasuredRow row;
    row.name = f[0];
    if (!absl::SimpleAtoi(f[1], &row.ranks) || !absl::SimpleAtod(f[3], &row.tokens_per_s) ||
        !absl::SimpleAtod(f[4], &row.peak_memory_mib)) {
      throw std::runtime_error("bad number in: " + line);
    }
    for (absl::string_view o : absl::StrSplit(f[2], ' ', absl::SkipEmpty())) {
      row.overrides.emplace_back(o);
    }
    rows.push_back(row);
  }
  return rows;
}

TEST(MeasuredThisMachine, DemoLayoutsWithinTolerance) {
  const ClusterSpec cluster = testing::cluster_file("this_machine.yaml");
  const std::vector<MeasuredRow> rows = measured_rows();
  ASSERT_GE(rows.size(), 10u);
  for (const MeasuredRow& row : rows) {
    auto recipe = load_recipe(testing::kSourceDir + "/configs/demo.yaml", row.overrides);
    ASSERT_TRUE(recipe.ok()) << recipe.status().message();
    recipe->model.vocab_size = 50257;  // GPT-2's, as the trainer fills it from the tokenizer
    auto plan = make_plan(*recipe, cluster, row.ranks, {});
    ASSERT_TRUE(plan.ok()) << row.name << ": " << plan.status().message();
    const double tokens = plan->tokens_per_s_per_gpu * row.ranks;
    const double memory = plan->memory_by_stage[0] / (1 << 20);
    EXPECT_LT(std::abs(tokens / row.tokens_per_s - 1), 0.15)
        << row.name << ": planned " << tokens << " tokens/s, measured " << row.tokens_per_s;
    EXPECT_LT(std::abs(memory / row.peak_memory_mib - 1), 0.10)
        << row.name << ": planned " << memory << " MiB, measured " << row.peak_memory_mib;
  }
}

}  // namespace
}  // namespace moefold
