// `moefold export-hf`: a moefold checkpoint to a Hugging Face transformers folder —
// model-0000i-of-0000n.safetensors shards with model.safetensors.index.json, config.json,
// generation_config.json and, where the tokenizer has a transformers form, its files.
//
// It streams: one tensor (or one expert's matrix) at a time goes from model.h5 to its shard, so
// the model is never held whole and checkpoints larger than memory export. Everything is written
// into <output>.partial-<pid> and renamed to <output> only when complete; an existing <output>
// is never touched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interop/hf_format.h"

namespace moefold {

struct ExportHfOptions {
  std::string checkpoint;  // a save directory (through `latest`) or an iteration directory
  HfFormat format = HfFormat::kMixtral;
  std::string output;                        // the folder to create
  int64_t max_shard_bytes = 5'000'000'000;  // transformers' default shard size (5 GB)
};

struct ExportHfResult {
  int shards = 0;
  int64_t tensors = 0;
  int64_t bytes = 0;               // tensor data
  std::vector<std::string> notes;  // e.g. which tokenizer files were (not) written, and why
};

absl::StatusOr<ExportHfResult> export_hf(const ExportHfOptions& options);

}  // namespace moefold
