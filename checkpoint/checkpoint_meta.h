// meta.json of a checkpoint directory: the training position, the layout and version that wrote
// it, the files' sizes, every tensor's checksum (tensor_checksum.h) and the recipe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "checkpoint/checkpoint.h"
#include "parallel/context.h"

namespace moefold {

// Checksums by file name ("model.h5"), then by dataset name ("exp_avg/embedding").
using FileChecksums = std::map<std::string, uint64_t>;
using Checksums = std::map<std::string, FileChecksums>;

struct CheckpointMeta {
  CheckpointState state;
  Checksums checksums;  // empty for checkpoints saved before checksums existed
};

// The text of meta.json. `optimizer_steps` < 0: no optimizer (no optim.h5).
std::string meta_json(const CheckpointState& state, int64_t optimizer_steps,
                      const ParallelContext& ctx, int64_t model_bytes, int64_t optim_bytes,
                      const Checksums& checksums);

// Parses meta.json's text; errors are one line naming `path` and what is wrong.
absl::StatusOr<CheckpointMeta> parse_meta(const std::string& text, const std::string& path);
absl::StatusOr<CheckpointMeta> read_meta(const std::string& path);

}  // namespace moefold
