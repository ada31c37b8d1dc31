// GPT-2's byte-level BPE, as OpenAI's encoder.py: the text is split by the GPT-2 pre-tokenizer
// regex (ICU), each piece's UTF-8 bytes are mapped to printable stand-in characters, merged by
// BPE rank (vocab.bpe) and looked up in encoder.json. End of document: "<|endoftext|>" (50256).
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"
#include "unicode/uversion.h"

U_NAMESPACE_BEGIN
class RegexPattern;
U_NAMESPACE_END

namespace moefold {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Gpt2Tokenizer>> load(const std::string& vocab_file,
                                                             const std::string& merge_file);
  ~Gpt2Tokenizer() override;

  // text is UTF-8; an invalid sequence is read as U+FFFD (and so encoded as its 3 bytes).
  // Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(decoder_.size()); }
  int32_t eod_id() const override { return eod_id_; }
  std::string name() const override { return "gpt2"; }

 private:
  Gpt2Tokenizer() = default;
  // Token ids of one pre-tokenized piece, given as its stand-in characters (UTF-8).
  std::vector<int32_t> bpe(const std::string& piece) const;

  std::unordered_map<std::string, int32_t> encoder_;  // token text → id
  std::vector<std::string> decoder_;                  // id → token text
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "left right" → rank
  std::array<std::string, 256> byte_encoder_;         // byte → stand-in character (UTF-8)
  std::array<int16_t, 512> byte_decoder_{};           // stand-in code point → byte, or -1
  int32_t eod_id_ = -1;
  std::unique_ptr<icu::RegexPattern> pattern_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace moefold
