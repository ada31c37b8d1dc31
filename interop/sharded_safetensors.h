// A Hugging Face checkpoint folder's weights: model-0000i-of-0000n.safetensors shards and
// model.safetensors.index.json ({"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}),
// or a single model.safetensors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "interop/safetensors.h"

namespace moefold {

inline constexpr const char* kSafetensorsIndexFile = "model.safetensors.index.json";
inline constexpr const char* kSingleSafetensorsFile = "model.safetensors";

// Writes the shards into `dir` one tensor after another: tensors are assigned, in the given order,
// to consecutive shards of at most `max_shard_bytes` (a larger tensor gets a shard of its own).
// append() takes the concatenation of all tensors' float32 elements in any pieces.
class ShardedSafetensorsWriter {
 public:
  static absl::StatusOr<ShardedSafetensorsWriter> create(const std::string& dir,
                                                         std::vector<SafetensorsEntry> tensors,
                                                         int64_t max_shard_bytes);
  absl::Status append(std::span<const float> values);
  absl::Status finish();  // closes the last shard and writes the index
  int num_shards() const { return static_cast<int>(shards_.size()); }

 private:
  struct Shard {
    std::string file;
    std::vector<SafetensorsEntry> tensors;
    int64_t data_bytes = 0;
  };
  absl::Status open_next_shard();

  std::string dir_;
  std::vector<Shard> shards_;
  size_t current_ = 0;  // shard being written
  int64_t left_in_shard_ = 0;
  std::optional<SafetensorsWriter> writer_;
};

// Every tensor of a checkpoint folder, each shard mapped once and validated on open.
class ShardedSafetensorsReader {
 public:
  // A missing shard, a corrupt index or shard, or an index entry whose shard lacks the tensor is
  // one error naming the file and tensor.
  static absl::StatusOr<ShardedSafetensorsReader> open(const std::string& dir);

  struct Located {
    const SafetensorsFile* file;
    const SafetensorsEntry* entry;
  };
  std::optional<Located> find(const std::string& name) const;
  std::vector<std::string> tensor_names() const;  // sorted

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> tensors_;
};

}  // namespace moefold
