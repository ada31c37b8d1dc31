// Inputs fuzz/checkpoint_meta_fuzzer found (each also kept in fuzz/corpus/checkpoint_meta/):
// every error stays one line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "checkpoint/checkpoint_dir.h"

namespace moefold {
namespace {

TEST(CheckpointFuzzRegressions, LatestWithNewlinesIsOneLine) {
  const std::string dir = ::testing::TempDir() + "/moefold_latest_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/latest") << "1\n2\nnot a number\n";  // regression_latest_newlines
  auto latest = read_latest(dir);
  ASSERT_FALSE(latest.ok());
  EXPECT_EQ(latest.status().message().find('\n'), std::string::npos) << latest.status();
  EXPECT_NE(latest.status().message().find("1\\n2\\nnot a number"), std::string::npos)
      << latest.status();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moefold
