#include "data/sentencepiece_tokenizer.h"

#include "absl/strings/str_cat.h"

namespace moefold {

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::load(
    const std::string& path) {
  std::string error;
  std::unique_ptr<SentencePieceModel> model = SentencePieceModel::load(path, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a SentencePiece model: ", error));
  }
  if (model->eos_id() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the SentencePiece model has no eos piece for the end of document"));
  }
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(model)));
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  const std::vector<int> ids = model_->encode(text);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

absl::StatusOr<std::string> SentencePieceTokenizer::decode(std::span<const int32_t> ids) const {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sentencepiece tokenizer: id ", id, " outside [0, ", vocab_size(), ")"));
    }
  }
  std::string text, error;
  if (!model_->decode(std::vector<int>(ids.begin(), ids.end()), &text, &error)) {
    return absl::InternalError("sentencepiece decode: " + error);
  }
  return text;
}

}  // namespace moefold
