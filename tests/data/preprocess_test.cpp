#include "data/preprocess.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/indexed_dataset.h"
#include "data/tokenizer.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::scratch_dir;
using testing_util::source_path;

std::vector<std::vector<int32_t>> read_documents(const std::string& prefix) {
  auto ds = IndexedDataset::open(prefix);
  EXPECT_TRUE(ds.ok()) << ds.status();
  std::vector<std::vector<int32_t>> docs;
  const auto& d = (*ds)->document_indices();
  for (size_t i = 0; i + 1 < d.size(); ++i) {
    std::vector<int32_t> doc;
    for (int64_t s = d[i]; s < d[i + 1]; ++s) {
      EXPECT_TRUE((*ds)->read(s, 0, (*ds)->sequence_lengths()[s], 0, &doc).ok());
    }
    docs.push_back(doc);
  }
  return docs;
}

std::vector<int32_t> bytes(const std::string& text) {
  return std::vector<int32_t>(reinterpret_cast<const unsigned char*>(text.data()),
                              reinterpret_cast<const unsigned char*>(text.data()) + text.size());
}

TEST(Preprocess, ParsesArguments) {
  const char* argv[] = {"--input", "a.jsonl", "b.txt", "--tokenizer", "byte", "--output", "out/x",
                        "--append-eod", "--vocab-file", "v.json", "--merge-file", "m.bpe"};
  auto options = parse_preprocess_args(12, const_cast<char**>(argv));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->inputs, (std::vector<std::string>{"a.jsonl", "b.txt"}));
  EXPECT_EQ(options->tokenizer_type, "byte");
  EXPECT_EQ(options->output_prefix, "out/x");
  EXPECT_TRUE(options->append_eod);
  EXPECT_EQ(options->vocab_file, "v.json");
  EXPECT_EQ(options->merge_file, "m.bpe");

  const char* no_output[] = {"--input", "a.jsonl"};
  EXPECT_THAT(std::string(parse_preprocess_args(2, const_cast<char**>(no_output)).status().message()),
              HasSubstr("no --output"));
  const char* workers[] = {"--input", "a", "--output", "b", "--workers", "4"};
  EXPECT_EQ(parse_preprocess_args(6, const_cast<char**>(workers))->workers, 4);
  const char* unknown[] = {"--input", "a", "--output", "b", "--partitions", "4"};
  EXPECT_THAT(std::string(parse_preprocess_args(6, const_cast<char**>(unknown)).status().message()),
              HasSubstr("unknown argument '--partitions'"));
  const char* dangling[] = {"--input", "a", "--output"};
  EXPECT_THAT(std::string(parse_preprocess_args(3, const_cast<char**>(dangling)).status().message()),
              HasSubstr("--output needs a value"));
}

TEST(Preprocess, JsonlAndTextFilesWithTheByteTokenizer) {
  const std::string dir = scratch_dir();
  std::ofstream(dir + "/plain.txt") << "whole file\nis one document";
  PreprocessOptions options;
  options.inputs = {source_path("tests/data/testdata/docs.jsonl"), dir + "/plain.txt"};
  options.tokenizer_type = "byte";
  options.output_prefix = dir + "/out";
  options.append_eod = true;
  std::ostringstream log;
  ASSERT_TRUE(run_preprocess(options, log).ok());
  EXPECT_THAT(log.str(), HasSubstr("preprocess: done: 4 documents, "));
  EXPECT_THAT(log.str(), HasSubstr("tokens/s"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/out.tmp" + std::to_string(::getpid()) + ".bin"));

  auto ds = IndexedDataset::open(dir + "/out");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ((*ds)->dtype(), IndexedDType::kUInt16);
  auto with_eod = [](std::vector<int32_t> ids) {
    ids.push_back(256);
    return ids;
  };
  EXPECT_EQ(read_documents(dir + "/out"),
            (std::vector<std::vector<int32_t>>{
                with_eod(bytes("Hello world")), with_eod(bytes("Second document.\nWith two lines.")),
                with_eod(bytes("caf\xc3\xa9")), with_eod(bytes("whole file\nis one document"))}));
}

// 2,500 documents (three batches) of uneven lengths: the same .bin and .idx bytes with one
// worker and with three, for the byte tokenizer and GPT-2's (whose word cache is shared).
TEST(Preprocess, WorkersGiveTheSameFiles) {
  const std::string dir = scratch_dir();
  {
    std::ofstream out(dir + "/many.jsonl");
    for (int d = 0; d < 2500; ++d) {
      std::string text = "document " + std::to_string(d);
      for (int w = 0; w < (d * 37) % 50; ++w) text += " word" + std::to_string((d + w) % 97);
      out << nlohmann::json{{"text", text}}.dump() << "\n";
    }
  }
  const auto bytes_of = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string{std::istreambuf_iterator<char>(in), {}};
  };
  std::vector<std::string> tokenizers = {"byte"};
  if (std::filesystem::exists(default_gpt2_vocab_file())) tokenizers.push_back("gpt2");
  for (const std::string& type : tokenizers) {
    SCOPED_TRACE(type);
    PreprocessOptions options;
    options.inputs = {dir + "/many.jsonl"};
    options.tokenizer_type = type;
    options.append_eod = true;
    std::ostringstream log;
    options.output_prefix = dir + "/one_" + type;
    ASSERT_TRUE(run_preprocess(options, log).ok());
    options.workers = 3;
    options.output_prefix = dir + "/three_" + type;
    ASSERT_TRUE(run_preprocess(options, log).ok());
    EXPECT_THAT(log.str(), HasSubstr("preprocess: done: 2500 documents, "));
    for (const char* ext : {".bin", ".idx"}) {
      const std::string one = bytes_of(dir + "/one_" + type + ext);
      EXPECT_FALSE(one.empty());
      EXPECT_TRUE(one == bytes_of(dir + "/three_" + type + ext)) << ext;
    }
  }
  const char* zero[] = {"--input", "a.jsonl", "--output", "x", "--workers", "0"};
  EXPECT_THAT(std::string(parse_preprocess_args(6, const_cast<char**>(zero)).status().message()),
              HasSubstr("--workers '0' is not a positive integer"));
}

TEST(Preprocess, BadInputsNameTheFileAndLine) {
  const std::string dir = scratch_dir();
  std::ofstream(dir + "/bad.jsonl") << "{\"text\": \"ok\"}\n{\"text\": 5}\n";
  std::ofstream(dir + "/broken.jsonl") << "{\"text\": \"ok\"}\n\n{not json\n";
  PreprocessOptions options;
  options.tokenizer_type = "byte";
  options.output_prefix = dir + "/out";
  std::ostringstream log;
  options.inputs = {dir + "/bad.jsonl"};
  EXPECT_EQ(std::string(run_preprocess(options, log).message()),
            dir + "/bad.jsonl:2: no string field \"text\"");
  options.inputs = {dir + "/broken.jsonl"};
  EXPECT_EQ(std::string(run_preprocess(options, log).message()),
            dir + "/broken.jsonl:3: not valid JSON");
  options.inputs = {dir + "/absent.txt"};
  EXPECT_THAT(std::string(run_preprocess(options, log).message()), HasSubstr("absent.txt: cannot open"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/out.idx"));
}

TEST(Preprocess, Gpt2TokensMatchTheTokenizer) {
  if (!std::filesystem::exists(default_gpt2_vocab_file())) {
    GTEST_SKIP() << "GPT-2 vocabulary not fetched (scripts/fetch_data.sh)";
  }
  const std::string dir = scratch_dir();
  PreprocessOptions options;
  options.inputs = {source_path("tests/data/testdata/docs.jsonl")};
  options.output_prefix = dir + "/out";
  options.append_eod = true;
  std::ostringstream log;
  ASSERT_TRUE(run_preprocess(options, log).ok());
  const auto docs = read_documents(dir + "/out");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], (std::vector<int32_t>{15496, 995, 50256}));
  auto tok = make_tokenizer("gpt2");
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> expected = (*tok)->encode("Second document.\nWith two lines.");
  expected.push_back(50256);
  EXPECT_EQ(docs[1], expected);
}

}  // namespace
}  // namespace moefold
