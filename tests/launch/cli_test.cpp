// The moefold binary as a user meets it: help, version, the layout report, and one clear line
// with a non-zero exit for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "absl/strings/str_split.h"
#include "moefold_command.h"

namespace {

using moefold::testing::CommandRun;
using moefold::testing::run_moefold;

const std::string kDemo = std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml";

TEST(Cli, HelpAndVersion) {
  const CommandRun help = run_moefold("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"train", "eval", "layout", "preprocess", "ckpt"}) {
    EXPECT_NE(help.output.find(command), std::string::npos) << command;
  }
  for (const char* command : {"train", "eval", "layout", "preprocess", "ckpt"}) {
    const CommandRun sub = run_moefold(std::string(command) + " --help");
    EXPECT_EQ(sub.exit_code, 0) << command;
    EXPECT_EQ(sub.output.rfind(std::string("usage: moefold ") + command, 0), 0u) << sub.output;
  }
  const CommandRun version = run_moefold("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.output.rfind("moefold ", 0), 0u) << version.output;
  EXPECT_NE(run_moefold("").exit_code, 0);
  const CommandRun unknown = run_moefold("trian");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_EQ(unknown.output, "moefold: unknown command 'trian' (see moefold --help)\n");
}

// The worked example of issue 2: world 16, TP 2, CP 2, PP 2, ETP 1, EP 4.
TEST(Cli, LayoutPrintsTheFoldedGroups) {
  const CommandRun run = run_moefold(
      "layout --config " + kDemo +
      " --world-size 16 --set parallel.tensor_model_parallel_size=2"
      " --set parallel.context_parallel_size=2 --set parallel.pipeline_model_parallel_size=2"
      " --set parallel.expert_tensor_parallel_size=1 --set parallel.expert_model_parallel_size=4");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::vector<std::string> expected = {
      "  tp        [0,1] [2,3] [4,5] [6,7] [8,9] [10,11] [12,13] [14,15]",
      "  cp        [0,2] [1,3] [4,6] [5,7] [8,10] [9,11] [12,14] [13,15]",
      "  dp        [0,4] [1,5] [2,6] [3,7] [8,12] [9,13] [10,14] [11,15]",
      "  pp        [0,8] [1,9] [2,10] [3,11] [4,12] [5,13] [6,14] [7,15]",
      "  dp_cp     [0,2,4,6] [1,3,5,7] [8,10,12,14] [9,11,13,15]",
      "  ep        [0,1,2,3] [4,5,6,7] [8,9,10,11] [12,13,14,15]",
      "  edp       [0,4] [1,5] [2,6] [3,7] [8,12] [9,13] [10,14] [11,15]"};
  const std::vector<std::string> lines = absl::StrSplit(run.output, '\n');
  for (const std::string& line : expected) {
    EXPECT_NE(std::find(lines.begin(), lines.end(), line), lines.end()) << line;
  }
  const CommandRun json = run_moefold("layout --config " + kDemo + " --world-size 2 --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  EXPECT_EQ(json.output.front(), '{');
}

TEST(Cli, BadInputIsOneLineAndNonZeroExit) {
  const std::string bad = ::testing::TempDir() + "/moefold_cli_bad.yaml";
  std::ofstream(bad) << "model:\n  hiden_size: 64\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"layout --config " + bad + " --world-size 2",
       bad + ":2: model.hiden_size: unknown key (did you mean model.hidden_size?)"},
      {"layout --config /nonexistent.yaml --world-size 2", "/nonexistent.yaml"},
      {"layout --config " + kDemo + " --world-size 3",
       "not a multiple"},
      {"layout --config " + kDemo + " --world-size 2 --set training.train_iter=5",
       "--set training.train_iter=5: unknown key (did you mean training.train_iters?)"},
      {"layout --config " + kDemo, "--world-size N is required"},
      {"layout --config " + kDemo + " --world-size two", "--world-size must be a positive integer"},
      {"eval --config " + kDemo, "--load CHECKPOINT is required"},
      {"train --config " + kDemo + " --kernel-profile /tmp/profile.txt",
       "--kernel-profile needs training.device: cuda"},
      {"preprocess --output /tmp/x", "--input"},
      {"ckpt inspect /nonexistent-checkpoint", "/nonexistent-checkpoint"},
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(args);
    const CommandRun run = run_moefold(args);
    EXPECT_NE(run.exit_code, 0);
    EXPECT_NE(run.output.find(message), std::string::npos) << run.output;
    EXPECT_EQ(std::count(run.output.begin(), run.output.end(), '\n'), 1) << run.output;
  }
}

}  // namespace
