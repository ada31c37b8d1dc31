// scripts/scaling_study.sh as a user runs it: three layouts of the tiny recipe, one table with a
// row per layout, positive throughput, and the same final losses everywhere (the global batch is
// the same, so parallelism invariance shows in the table).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "tiny_run.h"
#include "trainer/config_schema.h"

namespace moefold::testing {
namespace {

std::string run_command(const std::string& command, int& exit_code) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return output;
}

TEST(ScalingStudy, TabulatesLayoutsWithTheSameLosses) {
  const std::string dir = fresh_temp_dir("scaling-study");
  const std::string prefix = write_tiny_dataset(dir, 60, 5);
  std::ofstream(dir + "/tiny.yaml") << recipe_to_yaml(tiny_recipe(prefix, dir + "/run"));
  const std::string source = MOEFOLD_SOURCE_DIR;
  const std::string build = std::string(MOEFOLD_BINARY).substr(
      0, std::string(MOEFOLD_BINARY).rfind("/launch/moefold"));
  int exit_code = 0;
  const std::string output = run_command(
      "MOEFOLD_BUILD_DIR=" + build + " bash " + source + "/scripts/scaling_study.sh --config " +
          dir + "/tiny.yaml --steps 3 --out " + dir + "/study one:1 dp2:2 " +
          "tp2_ep2:2:parallel.tensor_model_parallel_size=2,parallel.expert_model_parallel_size=2,"
          "parallel.expert_tensor_parallel_size=1",
      exit_code);
  ASSERT_EQ(exit_code, 0) << output;
  std::ifstream csv(dir + "/study/summary.csv");
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line, "layout,ranks,tokens_per_s,tflops,mfu,peak_memory_mib,step_seconds,lm_loss,"
                  "grad_norm");
  std::vector<std::vector<std::string>> rows;
  while (std::getline(csv, line)) rows.push_back(absl::StrSplit(line, ','));
  ASSERT_EQ(rows.size(), 3u) << output;
  double reference_loss = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    ASSERT_EQ(rows[r].size(), 9u) << line;
    double tokens_per_s = 0, loss = 0;
    ASSERT_TRUE(absl::SimpleAtod(rows[r][2], &tokens_per_s));
    ASSERT_TRUE(absl::SimpleAtod(rows[r][7], &loss));
    EXPECT_GT(tokens_per_s, 0) << rows[r][0];
    if (r == 0) reference_loss = loss;
    EXPECT_NEAR(loss, reference_loss, 1e-5 * reference_loss) << rows[r][0];
  }
  EXPECT_EQ(rows[1][0], "dp2");
  EXPECT_EQ(rows[2][1], "2");
}

}  // namespace
}  // namespace moefold::testing
