// Shared by the interop tests: tiny trained checkpoints, and an independent reader of Hugging Face
// folders written from the safetensors description (8-byte little-endian header length, JSON
// header with dtype/shape/data_offsets, raw data), sharing no code with interop/.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/token_batch.h"

namespace moefold::testing {

// Overrides that make tiny_recipe's model map onto mixtral: every layer MoE, no shared expert.
std::vector<std::string> mixtral_overrides();
// Overrides for qwen3_moe: q/k norms, head dim 12 (not hidden / heads), no shared expert; layer 0
// stays dense.
std::vector<std::string> qwen3_overrides();

// Trains tiny_recipe(+overrides) for `steps` steps in one process on a corpus in <dir>/data and
// saves a checkpoint into <dir>/ckpt, which it returns.
std::string train_and_save(const std::string& dir, const std::vector<std::string>& overrides,
                           int steps);

// A fixed batch of 2 sequences of 16 byte-tokenizer ids, some positions masked.
TokenBatch fixed_batch();

struct IndependentTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // F32 only
};

// Every tensor of every shard named by <dir>/model.safetensors.index.json.
std::map<std::string, IndependentTensor> read_hf_folder(const std::string& dir);

nlohmann::json read_json_file(const std::string& path);

}  // namespace moefold::testing
