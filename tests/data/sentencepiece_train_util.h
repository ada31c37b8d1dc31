// Trains a small SentencePiece model for the tests through libsentencepiece_train. Kept apart
// from Abseil (sentencepiece's header redeclares absl::string_view): "" on success, else why not.
#pragma once

#include <string>

namespace moefold::testing_util {

std::string train_sentencepiece(const std::string& input_file, const std::string& model_prefix,
                                int vocab_size);

}  // namespace moefold::testing_util
