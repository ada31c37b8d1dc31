// The tokenizer files of a Hugging Face export, where moefold's tokenizer has a transformers
// form: GPT-2 BPE → vocab.json + merges.txt (GPT2Tokenizer); a tokenizer.json → itself
// (PreTrainedTokenizerFast); a SentencePiece model → tokenizer.model (LlamaTokenizer). The byte
// and null tokenizers have none; the note says so.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "data/data_config.h"
#include "interop/hf_format.h"
#include "model/model_config.h"

namespace moefold {

struct HfTokenizerFiles {
  HfTokenIds ids;    // bos/eos for config.json (the end-of-document id), when known
  std::string note;  // one line for the user: what was written, or why nothing was
};

absl::StatusOr<HfTokenizerFiles> write_hf_tokenizer_files(const DataConfig& data,
                                                          const ModelConfig& config,
                                                          const std::string& dir);

}  // namespace moefold
