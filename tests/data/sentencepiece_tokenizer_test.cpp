// SentencePiece models through libsentencepiece: a small BPE model trained here, encoded and
// decoded back, its eos piece as the end of document, preprocessed to .bin/.idx, and bad files
// refused with one line naming them.
#include "data/sentencepiece_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "data/indexed_dataset.h"
#include "data/preprocess.h"
#include "tests/data/data_test_util.h"
#include "tests/data/sentencepiece_train_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::scratch_dir;

std::string trained_model(const std::string& dir) {
  const std::string corpus = dir + "/corpus.txt";
  std::ofstream out(corpus);
  for (int i = 0; i < 50; ++i) {
    out << "the quick brown fox jumps over the lazy dog " << i << "\n"
        << "a moefold model pretrains mixtures of experts\n";
  }
  out.close();
  const std::string error = testing_util::train_sentencepiece(corpus, dir + "/sp", 80);
  EXPECT_EQ(error, "");
  return dir + "/sp.model";
}

TEST(SentencePieceTokenizer, EncodesDecodesAndEndsDocumentsWithEos) {
  const std::string dir = scratch_dir();
  auto tok = make_tokenizer("sentencepiece", trained_model(dir));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->name(), "sentencepiece");
  EXPECT_GE((*tok)->vocab_size(), 40);
  EXPECT_LE((*tok)->vocab_size(), 80);
  EXPECT_EQ((*tok)->eod_id(), 2);  // SentencePiece's default: <unk> 0, <s> 1, </s> 2
  const std::string text = "the lazy fox pretrains experts";
  const std::vector<int32_t> ids = (*tok)->encode(text);
  EXPECT_LT(ids.size(), text.size()) << "merges made pieces longer than one character";
  for (int32_t id : ids) EXPECT_LT(id, (*tok)->vocab_size());
  EXPECT_EQ(*(*tok)->decode(ids), text);
  EXPECT_FALSE((*tok)->decode(std::vector<int32_t>{-1}).ok());
}

TEST(SentencePieceTokenizer, PreprocessWritesTheIds) {
  const std::string dir = scratch_dir();
  const std::string model = trained_model(dir);
  std::ofstream(dir + "/docs.jsonl") << R"({"text": "the quick brown fox"})" << "\n"
                                     << R"({"text": "mixtures of experts"})" << "\n";
  PreprocessOptions options;
  options.inputs = {dir + "/docs.jsonl"};
  options.output_prefix = dir + "/out";
  options.tokenizer_type = "sentencepiece";
  options.vocab_file = model;
  options.append_eod = true;
  std::ostringstream log;
  ASSERT_TRUE(run_preprocess(options, log).ok()) << log.str();
  auto dataset = IndexedDataset::open(dir + "/out");
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_EQ((*dataset)->num_sequences(), 2);
  auto tok = make_tokenizer("sentencepiece", model);
  std::vector<int32_t> want = (*tok)->encode("the quick brown fox");
  want.push_back(2);
  std::vector<int32_t> got;
  ASSERT_TRUE((*dataset)->read(0, 0, (*dataset)->sequence_lengths()[0], 0, &got).ok());
  EXPECT_EQ(got, want);
}

TEST(SentencePieceTokenizer, RefusesFilesThatAreNotModels) {
  const std::string dir = scratch_dir();
  std::ofstream(dir + "/bad.model") << "not a model";
  auto tok = make_tokenizer("sentencepiece", dir + "/bad.model");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr("bad.model: not a SentencePiece model"));
  EXPECT_THAT(std::string(make_tokenizer("sentencepiece").status().message()),
              HasSubstr("needs its file as data.vocab_file"));
}

}  // namespace
}  // namespace moefold
