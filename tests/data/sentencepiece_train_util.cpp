#include "sentencepiece_train_util.h"

#include <sentencepiece_trainer.h>

namespace moefold::testing_util {

std::string train_sentencepiece(const std::string& input_file, const std::string& model_prefix,
                                int vocab_size) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + input_file + " --model_prefix=" + model_prefix +
      " --vocab_size=" + std::to_string(vocab_size) +
      " --model_type=bpe --character_coverage=1.0 --hard_vocab_limit=false"
      " --num_threads=1 --minloglevel=2");
  return status.ok() ? "" : status.ToString();
}

}  // namespace moefold::testing_util
