#include "data/tokenizer.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "data/byte_tokenizer.h"
#include "data/null_tokenizer.h"
#include "data/gpt2_tokenizer.h"
#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

#ifndef MOEFOLD_DEFAULT_DATA_DIR
#define MOEFOLD_DEFAULT_DATA_DIR "data_cache"
#endif

namespace moefold {

std::string default_data_dir() {
  const char* env = std::getenv("MOEFOLD_DATA_DIR");
  return env != nullptr && env[0] != '\0' ? std::string(env) : MOEFOLD_DEFAULT_DATA_DIR;
}

std::string default_gpt2_vocab_file() { return default_data_dir() + "/gpt2/encoder.json"; }
std::string default_gpt2_merge_file() { return default_data_dir() + "/gpt2/vocab.bpe"; }

absl::StatusOr<std::unique_ptr<Tokenizer>> make_tokenizer(const std::string& type,
                                                          const std::string& vocab_file,
                                                          const std::string& merge_file,
                                                          int64_t null_vocab_size) {
  if (type == "null") {
    if (null_vocab_size < 1) {
      return absl::InvalidArgumentError("the null tokenizer needs model.vocab_size > 0");
    }
    return std::unique_ptr<Tokenizer>(new NullTokenizer(null_vocab_size));
  }
  if (type == "byte") return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  if (type == "gpt2") {
    auto tok = Gpt2Tokenizer::load(vocab_file.empty() ? default_gpt2_vocab_file() : vocab_file,
                                   merge_file.empty() ? default_gpt2_merge_file() : merge_file);
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(*tok));
  }
  if (type == "huggingface" || type == "sentencepiece") {
    if (vocab_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the ", type, " tokenizer needs its file as data.vocab_file (--vocab-file): ",
          type == "huggingface" ? "a tokenizer.json" : "a SentencePiece .model"));
    }
    if (type == "huggingface") {
      auto tok = HfTokenizer::load(vocab_file);
      if (!tok.ok()) return tok.status();
      return std::unique_ptr<Tokenizer>(std::move(*tok));
    }
    auto tok = SentencePieceTokenizer::load(vocab_file);
    if (!tok.ok()) return tok.status();
    return std::unique_ptr<Tokenizer>(std::move(*tok));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown tokenizer type '", type, "' (expected gpt2, huggingface, sentencepiece, byte or null)"));
}

}  // namespace moefold
