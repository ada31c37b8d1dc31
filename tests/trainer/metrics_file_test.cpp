// The metrics file never destroys what moefold did not write, and a resume keeps exactly the
// records up to its checkpoint.
#include "trainer/metrics_file.h"

#include "nlohmann/json.hpp"
#include "trainer/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace moefold {
namespace {
namespace fs = std::filesystem;

class MetricsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("moefold_metrics_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  static std::string read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  fs::path dir_;
};

constexpr const char* kRecords =
    "{\"kind\":\"train\",\"iteration\":1,\"lm_loss\":5.0}\n"
    "{\"kind\":\"train\",\"iteration\":2,\"lm_loss\":4.0}\n"
    "{\"kind\":\"eval\",\"iteration\":2,\"val_loss\":4.5}\n"
    "{\"kind\":\"train\",\"iteration\":3,\"lm_loss\":3.0}\n";

TEST_F(MetricsFileTest, ResumeKeepsTheRecordsUpToTheCheckpoint) {
  const fs::path path = dir_ / "metrics.jsonl";
  std::ofstream(path) << kRecords;
  ASSERT_TRUE(prepare_metrics_file(path.string(), 2).ok());
  EXPECT_EQ(read(path),
            "{\"kind\":\"train\",\"iteration\":1,\"lm_loss\":5.0}\n"
            "{\"kind\":\"train\",\"iteration\":2,\"lm_loss\":4.0}\n"
            "{\"kind\":\"eval\",\"iteration\":2,\"val_loss\":4.5}\n");
  ASSERT_TRUE(prepare_metrics_file(path.string(), 0).ok());  // a fresh run
  EXPECT_EQ(read(path), "");
}

// Load-driven FSSDP: a MoE layer's record carries its placement figures; without placement the
// record has none.
TEST_F(MetricsFileTest, WritesThePlacementOfEachMoeLayer) {
  const fs::path path = dir_ / "metrics.jsonl";
  MetricsLogger logger(path.string(), false, true, 1);
  ASSERT_TRUE(logger.start(0).ok());
  IterationMetrics m;
  m.iteration = 1;
  MoeLoadSummary placed;
  placed.layer = 1;
  placed.tokens_per_expert = {6, 2};
  placed.placement = {true, {6, 2}, {4, 4}, 1, 96, 96};
  MoeLoadSummary plain;
  plain.layer = 2;
  plain.tokens_per_expert = {4, 4};
  m.moe = {placed, plain};
  logger.log_iteration(m);
  const nlohmann::json record = nlohmann::json::parse(read(path));
  const nlohmann::json& p = record["moe"][0]["placement"];
  EXPECT_EQ(p["ep_rows_per_rank"], nlohmann::json({6, 2}));
  EXPECT_EQ(p["rows_per_rank"], nlohmann::json({4, 4}));
  EXPECT_DOUBLE_EQ(p["ep_max_over_mean"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(p["max_over_mean"].get<double>(), 1.0);
  EXPECT_EQ(p["replicas"], 1);
  EXPECT_EQ(p["gathered_bytes"], 96);
  EXPECT_EQ(p["reduced_bytes"], 96);
  EXPECT_FALSE(record["moe"][1].contains("placement"));
}

TEST_F(MetricsFileTest, CreatesTheDirectory) {
  const fs::path path = dir_ / "run" / "nested" / "metrics.jsonl";
  ASSERT_TRUE(prepare_metrics_file(path.string(), 0).ok());
  EXPECT_TRUE(fs::is_regular_file(path));
}

TEST_F(MetricsFileTest, NeverTouchesWhatIsNotAMetricsFile) {
  const fs::path data = dir_ / "train.bin";
  const std::string bytes("\x01\x02\x00\x7f binary tokens", 18);
  std::ofstream(data, std::ios::binary) << bytes;
  const fs::path text = dir_ / "notes.jsonl";
  std::ofstream(text) << kRecords << "{\"not\":\"ours\"}\n";
  fs::create_directories(dir_ / "a_directory");
  std::ofstream(dir_ / "a_file") << "x";
  const struct {
    fs::path path;
    std::string message;
  } cases[] = {
      {data, "line 1 is not a moefold metrics record; refusing to overwrite it"},
      {text, "line 5 is not a moefold metrics record"},
      {dir_ / "a_directory", "a_directory: is a directory; refusing to overwrite it"},
      {dir_ / "a_file" / "metrics.jsonl", "a_file (the metrics file's directory) exists and is "
                                          "not a directory"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.path.string());
    const absl::Status status = prepare_metrics_file(c.path.string(), 0);
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message().find(c.message), std::string::npos) << status;
    EXPECT_EQ(status.message().find('\n'), std::string::npos);
  }
  EXPECT_EQ(read(data), bytes);
  EXPECT_TRUE(fs::is_directory(dir_ / "a_directory"));
  EXPECT_EQ(read(text).substr(0, 10), std::string(kRecords).substr(0, 10));
}

}  // namespace
}  // namespace moefold
