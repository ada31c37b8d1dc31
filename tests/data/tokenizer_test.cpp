#include "data/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "data/byte_tokenizer.h"
#include "data/gpt2_tokenizer.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::scratch_dir;
using testing_util::source_path;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<int32_t> read_ids(const std::string& path) {
  std::istringstream in(read_text(path));
  std::vector<int32_t> ids;
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// The GPT-2 files come from scripts/fetch_data.sh (scripts/test.sh runs it first).
std::unique_ptr<Tokenizer> gpt2_or_null() {
  if (!std::filesystem::exists(default_gpt2_vocab_file()) ||
      !std::filesystem::exists(default_gpt2_merge_file())) {
    return nullptr;
  }
  auto tok = make_tokenizer("gpt2");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(ByteTokenizer, RoundTripsBytes) {
  ByteTokenizer tok;
  const std::string text = "a\xff\x00z caf\xc3\xa9";
  const std::string with_nul(text.data(), 9);
  const auto ids = tok.encode(with_nul);
  ASSERT_EQ(ids.size(), 9u);
  EXPECT_EQ(ids[0], 'a');
  EXPECT_EQ(ids[1], 255);
  EXPECT_EQ(ids[2], 0);
  EXPECT_EQ(*tok.decode(ids), with_nul);
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eod_id(), 256);
  std::vector<int32_t> with_eod = {'h', 'i', 256};
  EXPECT_EQ(*tok.decode(with_eod), "hi");
  std::vector<int32_t> bad = {300};
  EXPECT_THAT(std::string(tok.decode(bad).status().message()), HasSubstr("id 300"));
}

TEST(NullTokenizer, IdsPlusEndOfDocumentAsMegatron) {
  auto tok = make_tokenizer("null", "", "", 1000);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 1001);
  EXPECT_EQ((*tok)->eod_id(), 1000);
  EXPECT_EQ((*tok)->encode("5 17  999"), (std::vector<int32_t>{5, 17, 999}));
  std::vector<int32_t> ids = {5, 1000};
  EXPECT_EQ(*(*tok)->decode(ids), "5 1000");
  std::vector<int32_t> bad = {1001};
  EXPECT_THAT(std::string((*tok)->decode(bad).status().message()), HasSubstr("id 1001"));
  EXPECT_THAT(std::string(make_tokenizer("null").status().message()),
              HasSubstr("needs model.vocab_size > 0"));
}

TEST(TokenizerFactory, ClearErrors) {
  EXPECT_THAT(std::string(make_tokenizer("wordpiece").status().message()),
              HasSubstr("unknown tokenizer type 'wordpiece' (expected gpt2, huggingface, "
                        "sentencepiece, byte or null)"));
  const std::string dir = scratch_dir();
  auto missing = make_tokenizer("gpt2", dir + "/encoder.json", dir + "/vocab.bpe");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr(dir + "/encoder.json: cannot open the GPT-2 vocabulary"));
  std::ofstream(dir + "/encoder.json") << "[1, 2]";
  std::ofstream(dir + "/vocab.bpe") << "#version: 0.2\n";
  EXPECT_THAT(std::string(make_tokenizer("gpt2", dir + "/encoder.json", dir + "/vocab.bpe")
                              .status()
                              .message()),
              HasSubstr("encoder.json: not a JSON object"));
  EXPECT_EQ(make_tokenizer("byte").value()->name(), "byte");
}

// A toy vocabulary exercises the BPE merge order without the real files. "aaab": the lowest
// rank pair ("a","a") merges left to right without overlap → [aa, a, b]; then ("a","b") →
// [aa, ab]; then ("aa","ab") → [aaab].
TEST(Gpt2Tokenizer, ToyMergesApplyByRank) {
  const std::string dir = scratch_dir();
  std::ofstream(dir + "/encoder.json")
      << R"({"a": 0, "b": 1, "aa": 2, "ab": 3, "aaab": 4, "<|endoftext|>": 5, "\u0120": 6,)"
      << R"( "\u0120b": 7})";
  std::ofstream(dir + "/vocab.bpe") << "#version: 0.2\na a\na b\naa ab\n\u0120 b\n";
  auto tok = make_tokenizer("gpt2", dir + "/encoder.json", dir + "/vocab.bpe");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 8);
  EXPECT_EQ((*tok)->eod_id(), 5);
  EXPECT_EQ((*tok)->encode("aaab"), (std::vector<int32_t>{4}));
  EXPECT_EQ((*tok)->encode("aab"), (std::vector<int32_t>{2, 1}));  // "aa" then "b"
  EXPECT_EQ((*tok)->encode("ab b"), (std::vector<int32_t>{3, 7}));  // " b" is one piece
  EXPECT_EQ(*(*tok)->decode(std::vector<int32_t>{3, 7}), "ab b");
}

TEST(Gpt2Tokenizer, GoldenIdsOfCommittedSnippets) {
  auto tok = gpt2_or_null();
  if (tok == nullptr) GTEST_SKIP() << "GPT-2 vocabulary not fetched (scripts/fetch_data.sh)";
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eod_id(), 50256);
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(tok->encode(" the"), (std::vector<int32_t>{262}));
  EXPECT_EQ(tok->encode("<|endoftext|>"),
            (std::vector<int32_t>{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(tok->encode(""), (std::vector<int32_t>{}));
  const std::string dir = source_path("tests/data/testdata");
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".txt") continue;
    const std::string text = read_text(entry.path().string());
    auto ids_path = entry.path();
    ids_path.replace_extension(".gpt2_ids");
    const std::vector<int32_t> expected = read_ids(ids_path.string());
    ASSERT_FALSE(expected.empty()) << ids_path;
    EXPECT_EQ(tok->encode(text), expected) << entry.path();
    EXPECT_EQ(*tok->decode(expected), text) << entry.path();
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

TEST(Gpt2Tokenizer, RoundTripsArbitraryBytes) {
  auto tok = gpt2_or_null();
  if (tok == nullptr) GTEST_SKIP() << "GPT-2 vocabulary not fetched (scripts/fetch_data.sh)";
  std::string text;
  for (int c = 1; c < 128; ++c) text.push_back(static_cast<char>(c));
  text += "  multiple   spaces\n\n\nnewlines\t\ttabs 12345678901234567890 ÄÖÜ ß ∑ 𝔘";
  EXPECT_EQ(*tok->decode(tok->encode(text)), text);
  const std::vector<int32_t> eod = {50256};
  EXPECT_EQ(*tok->decode(eod), "<|endoftext|>");
  EXPECT_FALSE(tok->decode(std::vector<int32_t>{50257}).ok());
}

}  // namespace
}  // namespace moefold
