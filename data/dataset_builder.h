// From the recipe's data section to the train/valid/test sample datasets, as Megatron's
// BlendedMegatronDatasetBuilder does: each prefix is split by the ratio string over its
// sequences, each split becomes a GptDataset, and with several prefixes the splits are blended
// by weight.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/data_config.h"
#include "data/sample_dataset.h"

namespace moefold {

struct BlendComponent {
  double weight = 1.0;
  std::string prefix;
};

// "PREFIX" or "W1 PREFIX1 W2 PREFIX2 ..." (the entries of data_path are joined by spaces
// first, so both ["0.8 a 0.2 b"] and ["0.8", "a", "0.2", "b"] work).
absl::StatusOr<std::vector<BlendComponent>> parse_data_path(
    const std::vector<std::string>& data_path);

// "969,30,1" (or "969/30/1"; missing parts are 0) → normalised train, valid, test weights.
absl::StatusOr<std::array<double, 3>> parse_split(const std::string& split);

// Megatron's get_split_indices: sequence boundaries b with split i = [b[i], b[i+1]), sizes
// rounded half to even and the rounding surplus taken from the end.
std::array<int64_t, 4> split_boundaries(const std::array<double, 3>& weights,
                                        int64_t num_sequences);

inline constexpr std::array<const char*, 3> kSplitNames = {"train", "valid", "test"};

struct GptDatasetsOptions {
  int64_t seq_length = 0;
  uint64_t seed = 1234;              // must fit in 32 bits (numpy RandomState, as Megatron)
  int64_t vocab_size = 0;            // token ids must be < vocab_size; 0 = not checked
  std::array<int64_t, 3> num_samples{};  // train, valid, test; 0 = that split is not built
};

struct GptDatasets {
  // Null where the split's weight or requested samples are 0.
  std::shared_ptr<const SampleDataset> train, valid, test;
};

absl::StatusOr<GptDatasets> build_gpt_datasets(const DataConfig& config,
                                               const GptDatasetsOptions& options);

}  // namespace moefold
