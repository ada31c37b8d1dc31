// Byte-level tokenizer for tests: id = byte value (0..255), end of document = 256.
#pragma once

#include "data/tokenizer.h"

namespace moefold {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return 257; }
  int32_t eod_id() const override { return 256; }
  std::string name() const override { return "byte"; }
};

}  // namespace moefold
