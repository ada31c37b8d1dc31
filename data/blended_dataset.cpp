#include "data/blended_dataset.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {
namespace {

std::vector<double> normalised(std::span<const double> weights) {
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  MOEFOLD_CHECK(!weights.empty() && sum > 0, "blend weights sum to " << sum);
  std::vector<double> out(weights.begin(), weights.end());
  for (double& w : out) w /= sum;
  return out;
}

}  // namespace

BlendingIndices build_blending_indices(std::span<const double> weights, int64_t size) {
  const std::vector<double> w = normalised(weights);
  const size_t n = w.size();
  BlendingIndices out;
  out.dataset_index.resize(size);
  out.dataset_sample_index.resize(size);
  std::vector<int64_t> taken(n, 0);
  for (int64_t i = 0; i < size; ++i) {
    // Pick the dataset furthest behind its target share; the first wins ties.
    const double target = std::max(static_cast<double>(i), 1.0);
    size_t best = 0;
    double best_error = w[0] * target - static_cast<double>(taken[0]);
    for (size_t d = 1; d < n; ++d) {
      const double error = w[d] * target - static_cast<double>(taken[d]);
      if (error > best_error) {
        best_error = error;
        best = d;
      }
    }
    out.dataset_index[i] = static_cast<int32_t>(best);
    out.dataset_sample_index[i] = taken[best]++;
  }
  return out;
}

std::vector<int64_t> blend_sample_counts(std::span<const double> weights, int64_t size) {
  const BlendingIndices indices = build_blending_indices(weights, size);
  std::vector<int64_t> counts(weights.size(), 0);
  for (int32_t d : indices.dataset_index) ++counts[d];
  return counts;
}

absl::StatusOr<std::shared_ptr<const BlendedDataset>> BlendedDataset::create(
    std::vector<std::shared_ptr<const SampleDataset>> datasets, std::vector<double> weights,
    int64_t size) {
  MOEFOLD_CHECK(!datasets.empty() && datasets.size() == weights.size(),
                datasets.size() << " datasets, " << weights.size() << " weights");
  for (size_t d = 0; d < weights.size(); ++d) {
    if (!(weights[d] > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blend weight ", weights[d], " of ", datasets[d]->describe(), " must be positive"));
    }
    if (datasets[d]->seq_length() != datasets[0]->seq_length()) {
      return absl::InvalidArgumentError(
          absl::StrCat(datasets[d]->describe(), " has seq_length ", datasets[d]->seq_length(),
                       ", ", datasets[0]->describe(), " has ", datasets[0]->seq_length()));
    }
  }
  std::shared_ptr<BlendedDataset> blend(new BlendedDataset());
  blend->indices_ = build_blending_indices(weights, size);
  blend->weights_ = normalised(weights);
  const std::vector<int64_t> counts = blend_sample_counts(weights, size);
  for (size_t d = 0; d < datasets.size(); ++d) {
    if (counts[d] > datasets[d]->size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a blend of ", size, " samples needs ", counts[d], " samples of ",
          datasets[d]->describe(), ", which has ", datasets[d]->size()));
    }
  }
  blend->datasets_ = std::move(datasets);
  return std::shared_ptr<const BlendedDataset>(std::move(blend));
}

absl::Status BlendedDataset::sample(int64_t index, std::vector<int32_t>* out_S1) const {
  MOEFOLD_CHECK(index >= 0 && index < size(), "sample " << index << " of " << size());
  return datasets_[indices_.dataset_index[index]]->sample(
      indices_.dataset_sample_index[index], out_S1);
}

std::string BlendedDataset::describe() const {
  std::string out = "blend of";
  for (size_t d = 0; d < datasets_.size(); ++d) {
    absl::StrAppend(&out, d == 0 ? " " : " + ", weights_[d], " × ", datasets_[d]->describe());
  }
  return out;
}

}  // namespace moefold
