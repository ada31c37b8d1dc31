// A thin wall around libsentencepiece. Its header declares `namespace absl { using
// std::string_view; }`, which clashes with Debian's Abseil, so only sentencepiece_model.cpp
// includes it, and this interface uses no Abseil types.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moefold {

class SentencePieceModel {
 public:
  // nullptr and *error set when `path` is not a loadable model.
  static std::unique_ptr<SentencePieceModel> load(const std::string& path, std::string* error);
  ~SentencePieceModel();

  std::vector<int> encode(std::string_view text) const;  // aborts on an internal error
  bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const;
  int piece_size() const;
  int eos_id() const;  // -1 when the model has none
  std::string piece(int id) const;  // the piece's text, e.g. "</s>" (decode drops control pieces)

 private:
  SentencePieceModel();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace moefold
