// A Hugging Face `tokenizer.json` with a BPE model, in either of the two forms models ship:
//   byte-level BPE (GPT-2, Llama 3, Qwen2/3, DeepSeek-V3): pre_tokenizer ByteLevel (GPT-2's
//       regex when use_regex), or a Sequence of Split steps (a regex, behavior Isolated, ICU), each
//       splitting the pieces of the one before, then ByteLevel; normalizer none or NFC.
//   SentencePiece-style BPE (Llama 2, Mistral, Mixtral): spaces become "▁", through normalizers
//       Prepend("▁") and Replace(" ", "▁") with no pre_tokenizer (the whole text is one word), or
//       a Metaspace pre_tokenizer (prepend_scheme always/first/never, split); byte_fallback: a
//       character outside the vocabulary becomes its UTF-8 bytes' <0xXX> tokens.
//   model           BPE: vocab, merges ("a b" or ["a", "b"]), ignore_merges
//   added_tokens    matched first, longest at each position, and kept whole; the text between
//                   them is normalised and split on its own
// Anything else in the file is refused with one line naming the field ("not supported yet: ...").
// The end of document is the first of <|endoftext|>, <|end_of_text|>, </s>, <eos> and DeepSeek's
// <｜end▁of▁sentence｜> that exists.
// encode is thread-safe.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <nlohmann/json_fwd.hpp>
#include <vector>

#include "data/bpe_merges.h"
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
  // One step of the normalizer: NFC, prepend `text`, or replace `from` by `text`.
  struct NormalizerStep {
    enum Kind { kNfc, kPrepend, kReplace } kind;
    std::string from, text;
  };
  enum class Prepend { kAlways, kFirst, kNever };  // Metaspace's prepend_scheme

  HfTokenizer() = default;
  absl::Status load_normalizer(const nlohmann::json& normalizer);
  absl::Status load_pre_tokenizer(const nlohmann::json& pre);
  absl::Status load_model(const nlohmann::json& j);
  // The text between two added tokens; `at_start`: nothing came before it.
  void encode_segment(const std::string& segment, bool at_start, std::vector<int32_t>& ids) const;
  void encode_byte_level(const std::string& text, std::vector<int32_t>& ids) const;
  void encode_word(const std::string& word, std::vector<int32_t>& ids) const;  // cached BPE
  void bpe(const std::string& word, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab_;        // token text (stand-ins) → id
  std::vector<std::string> decoder_;                      // id → token text ("" = unused id)
  std::vector<bool> is_added_;                            // id → an added token (decoded as is)
  BpeMerges merges_;
  std::vector<std::pair<std::string, int32_t>> added_;    // added tokens, longest first
  std::array<bool, 256> added_first_byte_{};              // bytes an added token starts with
  std::vector<NormalizerStep> normalizer_;
  const icu::Normalizer2* nfc_ = nullptr;  // when the normalizer has an NFC step
  bool byte_level_ = true;
  // Byte-level BPE.
  std::array<std::string, 256> byte_encoder_;              // byte → stand-in (UTF-8)
  std::unordered_map<std::string, uint8_t> byte_decoder_;  // stand-in → byte
  std::vector<std::unique_ptr<icu::RegexPattern>> splits_;  // the pre-tokenizer regexes, in order
  bool add_prefix_space_ = false;
  // SentencePiece-style BPE.
  std::string space_;                 // what stands for a space ("▁"), decoded back to " "
  bool metaspace_ = false;            // a Metaspace pre_tokenizer
  Prepend metaspace_prepend_ = Prepend::kAlways;
  bool metaspace_split_ = false;      // words start at each "▁"
  bool strip_leading_space_ = false;  // decode drops the space the encoder prepended
  std::array<int32_t, 256> byte_token_{};                 // byte → its <0xXX> token
  std::unordered_map<int32_t, uint8_t> byte_of_token_;    // <0xXX> token → byte
  bool ignore_merges_ = false;
  int32_t eod_id_ = -1;
  mutable std::mutex cache_mutex_;  // encode is thread-safe
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // word → ids
};

}  // namespace moefold
