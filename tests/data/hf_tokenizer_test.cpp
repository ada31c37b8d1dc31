// The Hugging Face tokenizer.json reader: a small byte-level BPE built here (merge order, added
// tokens, ignore_merges, Split + NFC as Llama 3 / Qwen2 use), the GPT-2 vocabulary converted to a
// tokenizer.json giving exactly the GPT-2 tokenizer's ids, and one clear line for what it refuses.
#include "data/hf_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing_util::scratch_dir;
using testing_util::source_path;

// GPT-2's byte → stand-in character table, written out here from its definition.
std::vector<std::string> byte_stand_ins() {
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int c = printable ? b : next++;
    std::string s;
    if (c < 0x80) {
      s = std::string(1, static_cast<char>(c));
    } else {
      s = {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
    }
    out[b] = s;
  }
  return out;
}

// Bytes have ids 0..255; merges add "he" 256, "ll" 257, "hell" 258, "Ġw" 259; <|endoftext|> 260.
nlohmann::json small_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  const auto bytes = byte_stand_ins();
  for (int b = 0; b < 256; ++b) vocab[bytes[b]] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["\xC4\xA0w"] = 259;  // Ġw
  return {{"version", "1.0"},
          {"added_tokens", {{{"id", 260}, {"content", "<|endoftext|>"}, {"special", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", {"h e", "l l", nlohmann::json::array({"he", "ll"}), "\xC4\xA0 w"}}}}};
}

std::string write_json(const std::string& dir, const nlohmann::json& j) {
  const std::string path = dir + "/tokenizer.json";
  std::ofstream(path) << j.dump();
  return path;
}

std::unique_ptr<Tokenizer> load(const nlohmann::json& j) {
  auto tok = make_tokenizer("huggingface", write_json(scratch_dir(), j));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(HfTokenizer, MergesInRankOrderAndKeepsAddedTokens) {
  auto tok = load(small_tokenizer());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->name(), "huggingface");
  EXPECT_EQ(tok->vocab_size(), 261);
  EXPECT_EQ(tok->eod_id(), 260);
  // "hello" → he,l,l,o → he,ll,o → hell,o; " world" → Ġw,o,r,l,d.
  EXPECT_THAT(tok->encode("hello world<|endoftext|>hell"),
              ElementsAre(258, 'o', 259, 'o', 'r', 'l', 'd', 260, 258));
  const std::vector<int32_t> ids = tok->encode("hello world<|endoftext|>hell");
  EXPECT_EQ(*tok->decode(ids), "hello world<|endoftext|>hell");
  const std::string unicode = "naïve café 🙂\n\ttabs  and\r\nlines";
  EXPECT_EQ(*tok->decode(tok->encode(unicode)), unicode);
  EXPECT_FALSE(tok->decode(std::vector<int32_t>{261}).ok());
}

TEST(HfTokenizer, IgnoreMergesTakesWholeWords) {
  nlohmann::json j = small_tokenizer();
  j["model"]["vocab"]["hello"] = 261;
  EXPECT_THAT(load(j)->encode("hello"), ElementsAre(258, 'o'));  // no merge makes "hello"
  j["model"]["ignore_merges"] = true;
  EXPECT_THAT(load(j)->encode("hello"), ElementsAre(261));
}

TEST(HfTokenizer, SplitRegexAndNfcAsQwenAndLlama3) {
  nlohmann::json j = small_tokenizer();
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"(\p{N}| ?\p{L}+|\s+|[^\s\p{L}\p{N}]+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  // "he" is a letter run, " " whitespace, and each digit its own piece.
  EXPECT_THAT(tok->encode("he 123"), ElementsAre(256, ' ', '1', '2', '3'));
  // "e" + combining acute accent is "é" after NFC.
  EXPECT_EQ(tok->encode("e\xCC\x81"), tok->encode("\xC3\xA9"));
  EXPECT_THAT(tok->encode("\xC3\xA9"), ElementsAre(0xC3, 0xA9));
}

// Digit runs under the three pre-tokenizers that matter: GPT-2 keeps "12345" whole, Llama 3
// splits it into "123" "45" (\p{N}{1,3}), Qwen2 into single digits (\p{N}). Merges "1 2" (261)
// and "3 4" (262) make the difference visible in the ids.
TEST(HfTokenizer, DigitRunsAsGpt2Llama3AndQwen2SplitThem) {
  nlohmann::json j = small_tokenizer();
  j["model"]["vocab"]["12"] = 261;
  j["model"]["vocab"]["34"] = 262;
  j["model"]["merges"] = {"1 2", "3 4"};
  EXPECT_THAT(load(j)->encode("12345"), ElementsAre(261, 262, '5'));
  const auto split = [&](const std::string& regex) {
    nlohmann::json k = j;
    k["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    return load(k);
  };
  const std::string contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|";
  const std::string rest = "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  auto llama3 = split(contractions + "\\p{N}{1,3}" + rest);
  auto qwen2 = split(contractions + "\\p{N}" + rest);
  ASSERT_TRUE(llama3 && qwen2);
  EXPECT_THAT(llama3->encode("12345"), ElementsAre(261, '3', '4', '5'));
  EXPECT_THAT(qwen2->encode("12345"), ElementsAre('1', '2', '3', '4', '5'));
  const std::string text = "It'S 2024:\r\n  naïve\tdone ";
  EXPECT_EQ(*llama3->decode(llama3->encode(text)), text);
  EXPECT_EQ(*qwen2->decode(qwen2->encode(text)), text);
}

std::string load_error(const nlohmann::json& j) {
  auto tok = make_tokenizer("huggingface", write_json(scratch_dir(), j));
  return tok.ok() ? "" : std::string(tok.status().message());
}

TEST(HfTokenizer, RefusesWhatItDoesNotRead) {
  nlohmann::json j = small_tokenizer();
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(load_error(j), HasSubstr("tokenizer.json: not supported yet: model WordPiece"));
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  EXPECT_THAT(load_error(j), HasSubstr("not supported yet: BPE without byte_fallback outside "
                                       "byte-level BPE"));
  j = small_tokenizer();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THAT(load_error(j), HasSubstr("not supported yet: pre_tokenizer Whitespace"));
  j = small_tokenizer();
  j["pre_tokenizer"]["add_prefix_space"] = "yes";
  EXPECT_THAT(load_error(j), HasSubstr("tokenizer.json: malformed: [json.exception.type_error"));
  j = small_tokenizer();
  j["model"]["byte_fallback"] = true;
  EXPECT_THAT(load_error(j), HasSubstr("not supported yet: byte-level BPE with byte_fallback"));
  j = small_tokenizer();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THAT(load_error(j), HasSubstr("not supported yet: normalizer Lowercase"));
  j = small_tokenizer();
  j["model"]["vocab"].erase("a");
  EXPECT_THAT(load_error(j), HasSubstr("model.vocab has no token for byte 97"));
  j = small_tokenizer();
  j["added_tokens"] = nlohmann::json::array();
  EXPECT_THAT(load_error(j), HasSubstr("no end-of-document token"));
  auto missing = make_tokenizer("huggingface", "/nonexistent/tokenizer.json");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/nonexistent/tokenizer.json"));
  EXPECT_THAT(std::string(make_tokenizer("huggingface").status().message()),
              HasSubstr("needs its file as data.vocab_file"));
}

// The ids of each committed snippet, from <snippet>.<suffix> in tests/data/testdata.
void expect_snippet_ids(const Tokenizer& tok, const std::string& suffix) {
  for (const char* name : {"hello_world", "contractions_numbers", "unicode", "control_whitespace",
                           "code_and_special", "sotu_whitespace"}) {
    const std::string base = source_path("tests/data/testdata/") + name;
    std::ifstream text_in(base + ".txt", std::ios::binary);
    const std::string text{std::istreambuf_iterator<char>(text_in), {}};
    std::ifstream ids_in(base + suffix);
    std::vector<int32_t> want;
    for (int32_t id; ids_in >> id;) want.push_back(id);
    ASSERT_FALSE(want.empty()) << base + suffix;
    EXPECT_EQ(tok.encode(text), want) << name;
    EXPECT_EQ(*tok.decode(want), text) << name;
  }
}

// GPT-2's own files (scripts/fetch_data.sh) as one tokenizer.json: the same ids as the GPT-2
// tokenizer's reference files.
TEST(HfTokenizer, Gpt2VocabularyAsTokenizerJsonGivesGpt2Ids) {
  if (!std::filesystem::exists(default_gpt2_vocab_file())) {
    GTEST_SKIP() << "no GPT-2 vocabulary (scripts/fetch_data.sh)";
  }
  std::ifstream vocab_in(default_gpt2_vocab_file());
  nlohmann::json vocab = nlohmann::json::parse(vocab_in);
  std::ifstream merges_in(default_gpt2_merge_file());
  nlohmann::json merges = nlohmann::json::array();
  std::string line;
  while (std::getline(merges_in, line)) {
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  }
  const nlohmann::json j = {
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  auto tok = load(j);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->eod_id(), 50256);
  expect_snippet_ids(*tok, ".gpt2_ids");
}

// DeepSeek-V3's own tokenizer.json (scripts/fetch_data.sh): three Split steps (digit runs of at
// most three, CJK runs, then words and punctuation) before ByteLevel; the ids of the
// transformers.js port, and its end of sentence as the end of document.
TEST(HfTokenizer, DeepSeekV3GivesItsIds) {
  const std::string path = default_data_dir() + "/deepseek_v3/tokenizer.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no DeepSeek-V3 tokenizer (fetch_data.sh)";
  auto tok = make_tokenizer("huggingface", path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 128815);  // ids up to the last added token
  EXPECT_EQ((*tok)->eod_id(), 1);
  expect_snippet_ids(**tok, ".deepseek_v3_ids");
  EXPECT_EQ((*tok)->encode("Hello world 12345 \u4F60\u597D\u4E16\u754C"
                           "<\uFF5Cend\u2581of\u2581sentence\uFF5C>"),
            (std::vector<int32_t>{19923, 2058, 223, 6895, 1883, 223, 30594, 3427, 1}));
}

// Mistral 7B's vocabulary and merges (scripts/fetch_data.sh) in Llama 2's tokenizer.json form:
// the ids of Mistral's own SentencePiece tokenizer on mistral-tokenizer-js's test cases, and of
// that package's encoder on the snippets; each decodes back to its text.
std::unique_ptr<Tokenizer> mistral(const std::function<void(nlohmann::json&)>& edit = nullptr) {
  const std::string path = default_data_dir() + "/mistral/tokenizer.json";
  std::ifstream in(path);
  nlohmann::json j = nlohmann::json::parse(in);
  if (edit) edit(j);
  return load(j);
}

TEST(HfTokenizer, MistralSentencePieceBpeGivesMistralIds) {
  if (!std::filesystem::exists(default_data_dir() + "/mistral/tokenizer.json")) {
    GTEST_SKIP() << "no Mistral tokenizer (scripts/fetch_data.sh)";
  }
  auto tok = mistral();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->eod_id(), 2);  // </s>
  std::ifstream cases_in(source_path("tests/data/testdata/mistral_cases.json"));
  const nlohmann::json cases = nlohmann::json::parse(cases_in);
  ASSERT_EQ(cases.size(), 12u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok->encode(text), c["ids"].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(*tok->decode(tok->encode(text)), text) << text;
  }
  expect_snippet_ids(*tok, ".mistral_ids");
  // Special tokens are matched in the text; the text after one is normalised on its own
  // (Prepend gives it a "▁" too, as the tokenizers library does).
  EXPECT_EQ(tok->encode("<s>Hello</s>"), (std::vector<int32_t>{1, 22557, 2}));
}

// The newer form of the same tokenizer: no normalizer, a Metaspace pre-tokenizer that prepends
// "▁" to the first section only and does not split. Same ids, except where the tokenizers
// library's Metaspace differs from the legacy form: no "▁" after a special token, and none added
// to a text that already begins with a space.
TEST(HfTokenizer, MistralWithAMetaspacePreTokenizerGivesTheSameIds) {
  if (!std::filesystem::exists(default_data_dir() + "/mistral/tokenizer.json")) {
    GTEST_SKIP() << "no Mistral tokenizer (scripts/fetch_data.sh)";
  }
  auto legacy = mistral();
  auto metaspace = mistral([](nlohmann::json& j) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"},
                          {"prepend_scheme", "first"}, {"split", false}};
  });
  ASSERT_TRUE(legacy && metaspace);
  for (const char* text : {"Hello world", "grabbed  twice", "ax\n####\nboo", "🦙Ꙋ tabs\t\tx"}) {
    EXPECT_EQ(metaspace->encode(text), legacy->encode(text)) << text;
    EXPECT_EQ(*metaspace->decode(metaspace->encode(text)), text);
  }
  EXPECT_EQ(metaspace->encode("<s>Hello"), (std::vector<int32_t>{1, 16230}));  // "Hello", no "▁"
  EXPECT_EQ(metaspace->encode(" grabbed"), (std::vector<int32_t>{13300}));    // "▁grabbed"
  // split: each word starting at a "▁" is merged on its own.
  auto split = mistral([](nlohmann::json& j) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"},
                          {"prepend_scheme", "always"}, {"split", true}};
  });
  ASSERT_NE(split, nullptr);
  EXPECT_EQ(split->encode("Hello world"), legacy->encode("Hello world"));
}

}  // namespace
}  // namespace moefold
