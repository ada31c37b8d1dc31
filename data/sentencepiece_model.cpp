#include "data/sentencepiece_model.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstdlib>

namespace moefold {

SentencePieceModel::SentencePieceModel()
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::load(const std::string& path,
                                                             std::string* error) {
  std::unique_ptr<SentencePieceModel> model(new SentencePieceModel());
  const auto status = model->processor_->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return model;
}

std::vector<int> SentencePieceModel::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  if (!status.ok()) {  // only on an unloaded model, which load() never returns
    std::fprintf(stderr, "sentencepiece encode: %s\n", status.ToString().c_str());
    std::abort();
  }
  return ids;
}

bool SentencePieceModel::decode(const std::vector<int>& ids, std::string* text,
                                std::string* error) const {
  const auto status = processor_->Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

int SentencePieceModel::piece_size() const { return processor_->GetPieceSize(); }
int SentencePieceModel::eos_id() const { return processor_->eos_id(); }
std::string SentencePieceModel::piece(int id) const { return processor_->IdToPiece(id); }

}  // namespace moefold
