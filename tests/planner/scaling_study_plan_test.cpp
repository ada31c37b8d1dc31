// scripts/scaling_study.sh --plan as a user runs it on the tiny recipe: every measured row gets
// the planner's columns, the Markdown table shows both, and the PNG plot is written.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tiny_run.h"
#include "trainer/config_schema.h"

namespace moefold::testing {
namespace {

TEST(ScalingStudyPlan, PlannedColumnsAndPlot) {
  const std::string dir = fresh_temp_dir("scaling-study-plan");
  const std::string prefix = write_tiny_dataset(dir, 60, 5);
  std::ofstream(dir + "/tiny.yaml") << recipe_to_yaml(tiny_recipe(prefix, dir + "/run"));
  const std::string source = MOEFOLD_SOURCE_DIR;
  const std::string binary = MOEFOLD_BINARY;
  const std::string build = binary.substr(0, binary.rfind("/launch/moefold"));
  const std::string command = "MOEFOLD_BUILD_DIR=" + build + " bash " + source +
                              "/scripts/scaling_study.sh --plan --config " + dir +
                              "/tiny.yaml --steps 3 --out " + dir +
                              "/study one:1 ep2:2:parallel.expert_model_parallel_size=2 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) output += buffer.data();
  ASSERT_EQ(WEXITSTATUS(pclose(pipe)), 0) << output;

  std::ifstream csv(dir + "/study/summary.csv");
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "layout,ranks,tokens_per_s,tflops,mfu,peak_memory_mib,step_seconds,lm_loss,"
                  "grad_norm,plan_tokens_per_s,plan_mfu,plan_peak_memory_mib,plan_step_seconds");
  int rows = 0;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, ',');
    ASSERT_EQ(f.size(), 13u) << line;
    for (int column : {9, 10, 11, 12}) {
      double value = 0;
      EXPECT_TRUE(absl::SimpleAtod(f[column], &value) && value > 0) << line;
    }
    ++rows;
  }
  EXPECT_EQ(rows, 2);
  std::ifstream md(dir + "/study/summary.md");
  std::getline(md, line);
  EXPECT_NE(line.find("planned"), std::string::npos) << line;
  EXPECT_GT(std::filesystem::file_size(dir + "/study/plan_vs_measured.png"), 1000u);
}

}  // namespace
}  // namespace moefold::testing
