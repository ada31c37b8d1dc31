// What the batch iterator draws from: a fixed number of samples of seq_length + 1 tokens, each
// addressed by its global index (GptDataset, or a BlendedDataset of several).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace moefold {

class SampleDataset {
 public:
  virtual ~SampleDataset() = default;
  virtual int64_t size() const = 0;
  virtual int64_t seq_length() const = 0;
  // Appends the seq_length + 1 tokens of sample `index` (0 <= index < size()) to out_S1.
  // Fails on data errors (a token id outside the vocabulary), naming the file.
  virtual absl::Status sample(int64_t index, std::vector<int32_t>* out_S1) const = 0;
  // For messages: which data this is ("train split of data/x").
  virtual std::string describe() const = 0;
};

}  // namespace moefold
