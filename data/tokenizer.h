// Text ↔ token ids. Implementations: GPT-2 byte-level BPE (gpt2_tokenizer.h), Hugging Face
// tokenizer.json BPE (hf_tokenizer.h), SentencePiece (sentencepiece_tokenizer.h) and a
// byte-level tokenizer for tests (byte_tokenizer.h); make_tokenizer picks one by name.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Thread-safe in every implementation (preprocess --workers calls it from several threads).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Fails on an id outside [0, vocab_size()).
  virtual absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t eod_id() const = 0;  // end of document
  virtual std::string name() const = 0;
};

// Where scripts/fetch_data.sh puts its files: $MOEFOLD_DATA_DIR, else <source tree>/data_cache.
std::string default_data_dir();
std::string default_gpt2_vocab_file();  // <data dir>/gpt2/encoder.json
std::string default_gpt2_merge_file();  // <data dir>/gpt2/vocab.bpe

// type: "gpt2" (vocab_file = encoder.json, merge_file = vocab.bpe; empty = the defaults above),
// "huggingface" (vocab_file = a tokenizer.json, hf_tokenizer.h), "sentencepiece" (vocab_file = a
// .model), "byte", or "null" (pre-tokenized data: null_vocab_size ids plus end-of-document, as
// Megatron).
absl::StatusOr<std::unique_ptr<Tokenizer>> make_tokenizer(const std::string& type,
                                                          const std::string& vocab_file = "",
                                                          const std::string& merge_file = "",
                                                          int64_t null_vocab_size = 0);

}  // namespace moefold
