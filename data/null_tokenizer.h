// Megatron's NullTokenizer, for data tokenized elsewhere: text is space-separated ids,
// `vocab_size` data ids 0..vocab_size-1 plus the end-of-document id vocab_size.
#pragma once

#include "data/tokenizer.h"

namespace moefold {

class NullTokenizer final : public Tokenizer {
 public:
  explicit NullTokenizer(int64_t vocab_size) : vocab_size_(vocab_size) {}
  // Non-numeric words are skipped; callers who need strictness check the round trip.
  std::vector<int32_t> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return vocab_size_ + 1; }
  int32_t eod_id() const override { return static_cast<int32_t>(vocab_size_); }
  std::string name() const override { return "null"; }

 private:
  int64_t vocab_size_;
};

}  // namespace moefold
