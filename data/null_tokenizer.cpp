#include "data/null_tokenizer.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace moefold {

std::vector<int32_t> NullTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (absl::string_view word :
       absl::StrSplit(absl::string_view(text.data(), text.size()), ' ', absl::SkipEmpty())) {
    int32_t id = 0;
    if (absl::SimpleAtoi(word, &id)) ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::string> NullTokenizer::decode(std::span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("null tokenizer: id ", id, " outside [0, ", vocab_size(), ")"));
    }
  }
  return absl::StrJoin(ids, " ");
}

}  // namespace moefold
