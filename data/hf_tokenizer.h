// A Hugging Face `tokenizer.json` with a byte-level BPE model, as GPT-2, Llama 3 and Qwen2 ship:
//   normalizer      none, or NFC (ICU)
//   pre_tokenizer   ByteLevel (GPT-2's regex when use_regex), or a Sequence of Split (a regex,
//                   behavior Isolated, ICU) and ByteLevel without regex
//   model           BPE: vocab, merges ("a b" or ["a", "b"]), ignore_merges
//   added_tokens    matched first, longest at each position, and kept whole
// Anything else in the file is refused with one line naming the field ("not supported yet: ...").
// The end of document is the first of <|endoftext|>, <|end_of_text|>, </s>, <eos> that exists.
// encode is thread-safe.
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
class Normalizer2;
U_NAMESPACE_END

namespace moefold {

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> load(const std::string& path);
  ~HfTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(decoder_.size()); }
  int32_t eod_id() const override { return eod_id_; }
  std::string name() const override { return "huggingface"; }

 private:
  HfTokenizer() = default;
  void encode_plain(const std::string& text, std::vector<int32_t>& ids) const;
  void bpe(const std::string& piece, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab_;        // token text (stand-ins) → id
  std::vector<std::string> decoder_;                      // id → token text ("" = unused id)
  std::vector<bool> is_added_;                            // id → an added token (decoded as is)
  std::unordered_map<std::string, int32_t> merge_ranks_;  // "left right" → rank
  std::vector<std::pair<std::string, int32_t>> added_;    // added tokens, longest first
  std::array<bool, 256> added_first_byte_{};              // bytes an added token starts with
  std::array<std::string, 256> byte_encoder_;             // byte → stand-in (UTF-8)
  std::unordered_map<std::string, uint8_t> byte_decoder_;  // stand-in → byte
  std::unique_ptr<icu::RegexPattern> split_;    // the pre-tokenizer regex
  const icu::Normalizer2* nfc_ = nullptr;       // when the normalizer is NFC
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  int32_t eod_id_ = -1;
  mutable std::mutex cache_mutex_;  // encode is thread-safe
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece → ids
};

}  // namespace moefold
