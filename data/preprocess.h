// `moefold preprocess`: text documents → a Megatron .bin/.idx dataset, one sequence per
// document (as Megatron's tools/preprocess_data.py without sentence splitting).
//
// Inputs: JSONL files (*.jsonl, *.json: one JSON object per line, the document in the `text`
// field) or plain text files (any other name: the whole file is one document). The output is
// uint16 when the vocabulary has fewer than 65500 ids, else int32, as Megatron.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moefold {

struct PreprocessOptions {
  std::vector<std::string> inputs;
  std::string tokenizer_type = "gpt2";  // gpt2 | byte
  std::string vocab_file;               // gpt2 encoder.json; empty = the default
  std::string merge_file;               // gpt2 vocab.bpe; empty = the default
  std::string output_prefix;            // writes PREFIX.bin and PREFIX.idx
  bool append_eod = false;              // end each document with the end-of-document id
  std::string json_key = "text";
  int workers = 1;  // threads tokenizing; the output is the same for any number
};

// Parses the arguments that follow `moefold preprocess` (argv[0] is the first of them):
//   --input FILE [FILE...] --output PREFIX [--tokenizer gpt2|byte] [--append-eod]
//   [--vocab-file F] [--merge-file F] [--json-key K] [--workers N]
absl::StatusOr<PreprocessOptions> parse_preprocess_args(int argc, char** argv);
std::string preprocess_usage();

// Writes progress lines and a summary (documents, tokens, tokens/s) to `log`.
absl::Status run_preprocess(const PreprocessOptions& options, std::ostream& log);
absl::Status run_preprocess(const PreprocessOptions& options);  // logs to stdout

}  // namespace moefold
