#include "data/byte_tokenizer.h"

#include "absl/strings/str_cat.h"

namespace moefold {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

absl::StatusOr<std::string> ByteTokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    if (id == eod_id()) continue;  // a document boundary has no text
    if (id < 0 || id > 255) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte tokenizer: id ", id, " outside [0, ", vocab_size(), ")"));
    }
    text.push_back(static_cast<char>(id));
  }
  return text;
}

}  // namespace moefold
