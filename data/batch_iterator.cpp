#include "data/batch_iterator.h"

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {

absl::StatusOr<BatchIterator> BatchIterator::create(std::shared_ptr<const SampleDataset> dataset,
                                                    const BatchIteratorOptions& options,
                                                    int64_t consumed_samples) {
  MOEFOLD_CHECK(dataset != nullptr);
  const int64_t g = options.global_batch_size;
  const int64_t b = options.micro_batch_size;
  const int64_t d = options.data_parallel_size;
  if (b <= 0 || d <= 0 || g <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("global_batch_size ", g, ", micro_batch_size ", b,
                     " and data-parallel size ", d, " must be positive"));
  }
  if (g % (b * d) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("global_batch_size ", g, " is not divisible by micro_batch_size ", b,
                     " × data-parallel size ", d));
  }
  if (options.data_parallel_rank < 0 || options.data_parallel_rank >= d) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data-parallel rank ", options.data_parallel_rank, " outside [0, ", d, ")"));
  }
  if (consumed_samples < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("consumed samples ", consumed_samples, " is negative"));
  }
  return BatchIterator(std::move(dataset), options, consumed_samples);
}

int64_t BatchIterator::num_micro_batches() const {
  return options_.global_batch_size /
         (options_.micro_batch_size * options_.data_parallel_size);
}

absl::StatusOr<std::vector<MicroBatch>> BatchIterator::next_global_batch() {
  const int64_t g = options_.global_batch_size;
  if (consumed_samples_ + g > dataset_->size()) {
    return absl::OutOfRangeError(absl::StrCat(
        dataset_->describe(), " has ", dataset_->size(), " samples; the global batch after ",
        consumed_samples_, " consumed samples needs ", consumed_samples_ + g));
  }
  const int64_t m = num_micro_batches();
  const int64_t b = options_.micro_batch_size;
  const int64_t rank_first = consumed_samples_ + options_.data_parallel_rank * m * b;
  std::vector<MicroBatch> out;
  out.reserve(m);
  for (int64_t k = 0; k < m; ++k) {
    auto mb = micro_batch_at(rank_first + k * b);
    if (!mb.ok()) return mb.status();
    out.push_back(std::move(*mb));
  }
  consumed_samples_ += g;
  return out;
}

absl::StatusOr<MicroBatch> BatchIterator::micro_batch_at(int64_t first) const {
  const int64_t b = options_.micro_batch_size;
  const int64_t s = dataset_->seq_length();
  MOEFOLD_CHECK(first >= 0 && first + b <= dataset_->size(), "samples " << first << "+" << b);
  MicroBatch mb;
  mb.batch = static_cast<int>(b);
  mb.seq = static_cast<int>(s);
  mb.tokens.resize(b * s);
  mb.labels.resize(b * s);
  mb.loss_mask.assign(b * s, 1.0f);
  std::vector<int32_t> sample_S1;
  for (int64_t i = 0; i < b; ++i) {
    sample_S1.clear();
    if (absl::Status st = dataset_->sample(first + i, &sample_S1); !st.ok()) return st;
    for (int64_t t = 0; t < s; ++t) {
      mb.tokens[i * s + t] = sample_S1[t];
      mb.labels[i * s + t] = sample_S1[t + 1];
      if (options_.eod_mask_loss && sample_S1[t + 1] == options_.eod_id) {
        mb.loss_mask[i * s + t] = 0.0f;
      }
    }
  }
  return mb;
}

}  // namespace moefold
