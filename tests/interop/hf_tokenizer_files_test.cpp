// The tokenizer files an export writes: GPT-2's vocab.json/merges.txt, a SentencePiece model as
// tokenizer.model, and for the byte tokenizer none, with the note saying so.
#include "interop/hf_tokenizer_files.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/tokenizer.h"
#include "hf_test_util.h"
#include "tests/data/sentencepiece_train_util.h"
#include "tiny_run.h"

namespace moefold::testing {
namespace {
namespace fs = std::filesystem;

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

ModelConfig tiny_model() {
  ModelConfig config;
  config.seq_length = 16;
  return config;
}

TEST(HfTokenizerFiles, Gpt2WritesVocabAndMerges) {
  if (!fs::exists(default_gpt2_vocab_file())) GTEST_SKIP() << "no GPT-2 files (fetch_data.sh)";
  const std::string dir = fresh_temp_dir("tok-gpt2");
  fs::create_directories(dir);
  DataConfig data;
  data.tokenizer_type = "gpt2";
  auto files = write_hf_tokenizer_files(data, tiny_model(), dir);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->ids.eos, 50256);
  EXPECT_EQ(files->ids.bos, 50256);
  EXPECT_EQ(file_text(dir + "/vocab.json"), file_text(default_gpt2_vocab_file()));
  EXPECT_EQ(file_text(dir + "/merges.txt"), file_text(default_gpt2_merge_file()));
  const nlohmann::json config = read_json_file(dir + "/tokenizer_config.json");
  EXPECT_EQ(config["tokenizer_class"], "GPT2Tokenizer");
  EXPECT_EQ(config["eos_token"], "<|endoftext|>");
}

TEST(HfTokenizerFiles, SentencePieceModelIsCopied) {
  const std::string dir = fresh_temp_dir("tok-sp");
  fs::create_directories(dir + "/out");
  std::ofstream corpus(dir + "/corpus.txt");
  for (int i = 0; i < 30; ++i) corpus << "mixture of experts models route tokens " << i << "\n";
  corpus.close();
  ASSERT_EQ(testing_util::train_sentencepiece(dir + "/corpus.txt", dir + "/sp", 60), "");
  DataConfig data;
  data.tokenizer_type = "sentencepiece";
  data.vocab_file = dir + "/sp.model";
  auto files = write_hf_tokenizer_files(data, tiny_model(), dir + "/out");
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->ids.eos, 2);
  EXPECT_EQ(file_text(dir + "/out/tokenizer.model"), file_text(dir + "/sp.model"));
  const nlohmann::json config = read_json_file(dir + "/out/tokenizer_config.json");
  EXPECT_EQ(config["eos_token"], "</s>");
  EXPECT_EQ(config["add_bos_token"], false);
}

TEST(HfTokenizerFiles, ByteTokenizerHasNoneAndSaysSo) {
  const std::string dir = fresh_temp_dir("tok-byte");
  fs::create_directories(dir);
  DataConfig data;
  data.tokenizer_type = "byte";
  auto files = write_hf_tokenizer_files(data, tiny_model(), dir);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->ids.eos, 256);
  EXPECT_TRUE(fs::is_empty(dir));
  EXPECT_NE(files->note.find("no tokenizer files: the byte tokenizer"), std::string::npos);
}

}  // namespace
}  // namespace moefold::testing
