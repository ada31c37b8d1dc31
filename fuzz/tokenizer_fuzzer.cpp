// The byte, GPT-2, DeepSeek-V3 (tokenizer.json, byte-level BPE after three Split steps) and
// Mistral (tokenizer.json, SentencePiece-style BPE with byte fallback) tokenizers on arbitrary
// bytes: encoding never crashes, every id is in the vocabulary, and decoding gives the text back
// (GPT-2 and DeepSeek-V3: for valid UTF-8, which they keep exactly; Mistral: for valid UTF-8
// without "▁", which stands for a space, nor a special token, after which the normaliser prepends
// a space of its own).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "data/byte_tokenizer.h"
#include "data/gpt2_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "unicode/utf8.h"

namespace {

bool valid_utf8(const std::string& text) {
  int32_t i = 0;
  const int32_t n = static_cast<int32_t>(text.size());
  while (i < n) {
    UChar32 c = 0;
    U8_NEXT(text.data(), i, n, c);
    if (c < 0) return false;
  }
  return true;
}

void check(const moefold::Tokenizer& tokenizer, const std::string& text, bool exact) {
  const std::vector<int32_t> ids = tokenizer.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
  auto back = tokenizer.decode(ids);
  if (!back.ok() || (exact && *back != text)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const moefold::ByteTokenizer bytes;
  check(bytes, text, /*exact=*/true);
  // The vocabulary of data_cache/ (scripts/fetch_data.sh); without it only bytes are fuzzed.
  static const std::unique_ptr<moefold::Gpt2Tokenizer> gpt2 = [] {
    const std::string dir = MOEFOLD_SOURCE_DIR "/data_cache/gpt2/";
    auto loaded = moefold::Gpt2Tokenizer::load(dir + "encoder.json", dir + "vocab.bpe");
    return loaded.ok() ? std::move(*loaded) : nullptr;
  }();
  if (gpt2) check(*gpt2, text, valid_utf8(text));
  const auto load = [](const char* path) -> std::unique_ptr<moefold::HfTokenizer> {
    auto loaded = moefold::HfTokenizer::load(path);
    return loaded.ok() ? std::move(*loaded) : nullptr;
  };
  static const auto deepseek = load(MOEFOLD_SOURCE_DIR "/data_cache/deepseek_v3/tokenizer.json");
  if (deepseek) check(*deepseek, text, valid_utf8(text));
  static const auto mistral = load(MOEFOLD_SOURCE_DIR "/data_cache/mistral/tokenizer.json");
  if (mistral) {
    bool exact = valid_utf8(text);
    for (const char* stand_in : {"\xE2\x96\x81", "<unk>", "<s>", "</s>"}) {
      exact = exact && text.find(stand_in) == std::string::npos;
    }
    check(*mistral, text, exact);
  }
  return 0;
}
