// The model config as root attributes of model.h5, so that the file alone says what model it
// holds, and the check on load that the checkpoint's model is the one the recipe builds.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/hdf5_file.h"
#include "model/model_config.h"

namespace moefold {

struct ConfigAttribute {
  std::string name;  // recipe key path, e.g. "model.hidden_size", "moe.num_experts"
  Hdf5Attribute value;
  // Keys that decide the tensors' names and shapes or the function the model computes must
  // match on load; the rest (init, loss coefficients, capacity) are kept for information.
  bool must_match = true;
};

// Every ModelConfig field, with resolved values where the recipe allows a shorthand
// (num_query_groups = kv heads; padded_vocab_size).
std::vector<ConfigAttribute> model_config_attributes(const ModelConfig& config);

// Compares the root attributes of `file` with `expected`; the first mismatch or missing key is
// one error, e.g. "ckpt/iter_0000010/model.h5: model config mismatch: model.hidden_size is 32
// in the checkpoint, 16 in the recipe".
absl::Status check_model_config(const Hdf5File& file, const ModelConfig& expected);

}  // namespace moefold
