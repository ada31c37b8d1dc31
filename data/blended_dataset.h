// Megatron's BlendedDataset: a weighted mix of datasets. Sample i comes from the dataset whose
// share so far lags its weight the most (helpers.cpp build_blending_indices), so every prefix of
// the blend holds each dataset in proportion to its weight, within one sample.
//
// Differs from Megatron: the blending indices are computed in memory (they cost O(size ·
// datasets) and no file I/O) rather than cached, and the caller sizes each component from the
// exact counts (blend_sample_counts) instead of Megatron's weight · size · 1.005 margin.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sample_dataset.h"

namespace moefold {

struct BlendingIndices {
  std::vector<int32_t> dataset_index;         // (size) which dataset sample i comes from
  std::vector<int64_t> dataset_sample_index;  // (size) its index inside that dataset
};

// weights need not sum to 1 (they are normalised).
BlendingIndices build_blending_indices(std::span<const double> weights, int64_t size);
// How many samples of each dataset a blend of `size` samples uses.
std::vector<int64_t> blend_sample_counts(std::span<const double> weights, int64_t size);

class BlendedDataset final : public SampleDataset {
 public:
  static absl::StatusOr<std::shared_ptr<const BlendedDataset>> create(
      std::vector<std::shared_ptr<const SampleDataset>> datasets, std::vector<double> weights,
      int64_t size);

  int64_t size() const override { return static_cast<int64_t>(indices_.dataset_index.size()); }
  int64_t seq_length() const override { return datasets_[0]->seq_length(); }
  absl::Status sample(int64_t index, std::vector<int32_t>* out_S1) const override;
  std::string describe() const override;

  const BlendingIndices& indices() const { return indices_; }

 private:
  BlendedDataset() = default;
  std::vector<std::shared_ptr<const SampleDataset>> datasets_;
  std::vector<double> weights_;
  BlendingIndices indices_;
};

}  // namespace moefold
