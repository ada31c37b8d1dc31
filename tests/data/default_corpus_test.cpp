#include "data/default_corpus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/indexed_dataset.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::scratch_dir;

// Points MOEFOLD_DATA_DIR at a scratch directory for one test and restores it afterwards.
class ScopedDataDir {
 public:
  explicit ScopedDataDir(const std::string& dir) {
    if (const char* old = std::getenv("MOEFOLD_DATA_DIR")) old_ = old;
    ::setenv("MOEFOLD_DATA_DIR", dir.c_str(), 1);
  }
  ~ScopedDataDir() {
    if (old_.empty()) {
      ::unsetenv("MOEFOLD_DATA_DIR");
    } else {
      ::setenv("MOEFOLD_DATA_DIR", old_.c_str(), 1);
    }
  }

 private:
  std::string old_;
};

TEST(DefaultCorpus, PreprocessesOnceThenReuses) {
  const std::string dir = scratch_dir();
  ScopedDataDir scoped(dir);
  DataConfig config;
  config.corpus = "sotu";
  config.tokenizer_type = "byte";
  std::ostringstream log;
  auto missing = prepare_default_corpus(config, log);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr(dir + "/sotu/sotu.jsonl: the State of the Union corpus is not fetched"));

  std::filesystem::create_directories(dir + "/sotu");
  std::ofstream(dir + "/sotu/sotu.jsonl") << "{\"text\": \"ab\"}\n{\"text\": \"cde\"}\n";
  auto prefix = prepare_default_corpus(config, log);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(*prefix, dir + "/sotu/sotu_byte_text_document");
  auto ds = IndexedDataset::open(*prefix);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ((*ds)->sequence_lengths(), (std::vector<int32_t>{3, 4}));  // with end-of-document
  EXPECT_THAT(log.str(), HasSubstr("preprocess: done: 2 documents"));

  std::ostringstream again;
  ASSERT_TRUE(prepare_default_corpus(config, again).ok());
  EXPECT_EQ(again.str(), "");

  config.corpus = "wikipedia";
  EXPECT_THAT(std::string(prepare_default_corpus(config, log).status().message()),
              HasSubstr("data.corpus 'wikipedia' is unknown"));
}

}  // namespace
}  // namespace moefold
