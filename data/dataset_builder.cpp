#include "data/dataset_builder.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/blended_dataset.h"
#include "data/gpt_dataset.h"
#include "data/indexed_dataset.h"

namespace moefold {

absl::StatusOr<std::vector<BlendComponent>> parse_data_path(
    const std::vector<std::string>& data_path) {
  const std::string joined = absl::StrJoin(data_path, " ");
  std::vector<std::string> parts = absl::StrSplit(joined, absl::ByAnyChar(" \t\n"),
                                                  absl::SkipEmpty());
  if (parts.empty()) return absl::InvalidArgumentError("data.data_path is empty");
  if (parts.size() == 1) return std::vector<BlendComponent>{{1.0, parts[0]}};
  if (parts.size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.data_path '", joined, "' must be one prefix or pairs of weight and prefix"));
  }
  std::vector<BlendComponent> out;
  for (size_t i = 0; i < parts.size(); i += 2) {
    double weight = 0;
    if (!absl::SimpleAtod(parts[i], &weight) || !(weight > 0) || !std::isfinite(weight)) {
      return absl::InvalidArgumentError(absl::StrCat("data.data_path: weight '", parts[i],
                                                     "' of '", parts[i + 1],
                                                     "' is not a positive number"));
    }
    out.push_back({weight, parts[i + 1]});
  }
  return out;
}

absl::StatusOr<std::array<double, 3>> parse_split(const std::string& split) {
  std::vector<std::string> parts = absl::StrSplit(split, absl::ByAnyChar(",/"));
  if (parts.size() > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("data.split '", split, "' has more than 3 parts (train,valid,test)"));
  }
  std::array<double, 3> weights{0, 0, 0};
  double sum = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!absl::SimpleAtod(parts[i], &weights[i]) || !(weights[i] >= 0) ||
        !std::isfinite(weights[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.split '", split, "': '", parts[i], "' is not a non-negative number"));
    }
    sum += weights[i];
  }
  if (!(sum > 0)) return absl::InvalidArgumentError(absl::StrCat("data.split '", split, "' sums to 0"));
  for (double& w : weights) w /= sum;
  return weights;
}

std::array<int64_t, 4> split_boundaries(const std::array<double, 3>& weights,
                                        int64_t num_sequences) {
  std::array<int64_t, 4> b{0, 0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    // std::nearbyint rounds half to even, as Python's round().
    b[i + 1] = b[i] + static_cast<int64_t>(
                          std::nearbyint(weights[i] * static_cast<double>(num_sequences)));
  }
  const int64_t surplus = b[3] - num_sequences;
  for (int i = 1; i < 4; ++i) b[i] -= surplus;
  return b;
}

absl::StatusOr<GptDatasets> build_gpt_datasets(const DataConfig& config,
                                               const GptDatasetsOptions& options) {
  if (options.seed > 0xffffffffULL) {
    return absl::InvalidArgumentError(absl::StrCat(
        "seed ", options.seed, " must be below 2^32 (Megatron's numpy RandomState seeds)"));
  }
  auto components = parse_data_path(config.data_path);
  if (!components.ok()) return components.status();
  auto split = parse_split(config.split);
  if (!split.ok()) return split.status();

  std::vector<std::shared_ptr<const IndexedDataset>> indexed;
  std::vector<double> weights;
  for (const BlendComponent& c : *components) {
    auto ds = IndexedDataset::open(c.prefix);
    if (!ds.ok()) return ds.status();
    if (options.vocab_size > 0) {
      if (absl::Status s = (*ds)->check_token_ids(options.vocab_size); !s.ok()) return s;
    }
    indexed.push_back(*ds);
    weights.push_back(c.weight);
  }

  std::array<std::shared_ptr<const SampleDataset>, 3> out;
  for (int s = 0; s < 3; ++s) {
    const int64_t wanted = options.num_samples[s];
    if ((*split)[s] == 0 || wanted == 0) continue;
    // A single prefix serves the samples directly; a blend needs exactly the counts its
    // blending indices will draw from each component.
    const std::vector<int64_t> counts =
        indexed.size() == 1 ? std::vector<int64_t>{wanted} : blend_sample_counts(weights, wanted);
    std::vector<std::shared_ptr<const SampleDataset>> parts;
    for (size_t d = 0; d < indexed.size(); ++d) {
      const auto b = split_boundaries(*split, indexed[d]->num_sequences());
      GptDatasetOptions gpt;
      gpt.seq_length = options.seq_length;
      gpt.num_samples = std::max<int64_t>(counts[d], 1);
      gpt.seed = static_cast<uint32_t>(options.seed);
      gpt.vocab_size = options.vocab_size;
      gpt.cache_dir = config.data_cache_path;
      gpt.split_name = kSplitNames[s];
      auto ds = GptDataset::build(indexed[d], b[s], b[s + 1], gpt);
      if (!ds.ok()) return ds.status();
      parts.push_back(*ds);
    }
    if (parts.size() == 1) {
      out[s] = parts[0];
    } else {
      auto blend = BlendedDataset::create(parts, weights, wanted);
      if (!blend.ok()) return blend.status();
      out[s] = *blend;
    }
  }
  return GptDatasets{out[0], out[1], out[2]};
}

}  // namespace moefold
