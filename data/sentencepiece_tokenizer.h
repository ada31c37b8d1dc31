// A SentencePiece model (`.model` file) as a Tokenizer, through Debian's libsentencepiece: the end
// of document is the model's eos piece (</s>), which it must have.
#pragma once

#include <memory>
#include <string>

#include "data/sentencepiece_model.h"
#include "data/tokenizer.h"

namespace moefold {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> load(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  absl::StatusOr<std::string> decode(std::span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return model_->piece_size(); }
  int32_t eod_id() const override { return model_->eos_id(); }
  std::string name() const override { return "sentencepiece"; }
  std::string eod_piece() const { return model_->piece(model_->eos_id()); }  // "</s>"

 private:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> model)
      : model_(std::move(model)) {}
  std::unique_ptr<SentencePieceModel> model_;
};

}  // namespace moefold
