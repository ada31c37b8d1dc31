// Initialising a model from a Hugging Face checkpoint folder (`moefold train --load-hf DIR`,
// `moefold import-hf`), under any parallel layout: each rank maps the safetensors shards and
// copies only the boxes its own TensorLayouts name (an expert-parallel rank reads only its
// experts, a tensor-parallel rank only its rows or columns).
//
// Everything is validated before any parameter changes: config.json against the recipe's model
// (hf_format.h), every tensor the format needs present with its shape, no tensor without a place
// in moefold's model, and the tensors moefold has no use for (qwen2_moe's q/k/v biases and zero
// shared expert) all zero. Every check reads only the folder, so every rank reaches the same
// verdict without communicating.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "model/model_config.h"
#include "model/parameter.h"

namespace moefold {

struct LoadHfStats {
  int64_t bytes_read = 0;  // float32 bytes copied into this rank's parameters
  std::string format;      // model_type
};

absl::Status load_hf_checkpoint(const std::string& dir, const ParameterRegistry& registry,
                                const ModelConfig& expected, LoadHfStats* stats = nullptr);

}  // namespace moefold
