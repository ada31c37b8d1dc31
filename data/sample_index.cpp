#include "data/sample_index.h"

#include <numeric>

#include "tensor/check.h"

namespace moefold {

uint64_t NumpyRandomState::random_interval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  for (int shift : {1, 2, 4, 8, 16, 32}) mask |= mask >> shift;
  uint64_t value;
  if (max <= 0xffffffffULL) {
    do {
      value = engine_() & mask;
    } while (value > max);
  } else {
    do {
      const uint64_t high = engine_();
      value = ((high << 32) | engine_()) & mask;
    } while (value > max);
  }
  return value;
}

EpochPlan plan_epochs(int64_t tokens_per_epoch, int64_t seq_length, int64_t num_samples) {
  MOEFOLD_CHECK(tokens_per_epoch > 1 && seq_length > 0,
                "tokens_per_epoch " << tokens_per_epoch << " seq_length " << seq_length);
  EpochPlan plan;
  if (num_samples <= 0) return plan;
  // Each sample needs seq_length tokens plus the one extra label token at the very end.
  const int64_t tokens_requested = num_samples * seq_length + 1;
  for (int64_t tokens = tokens_per_epoch; tokens < tokens_requested; tokens += tokens_per_epoch) {
    ++plan.num_epochs;
  }
  if (plan.num_epochs == 1) return plan;
  plan.samples_before_final_epoch =
      ((plan.num_epochs - 1) * tokens_per_epoch - 1) / seq_length;
  const int64_t from_final_epoch = num_samples - plan.samples_before_final_epoch;
  const int64_t per_epoch = (tokens_per_epoch - 1) / seq_length;
  MOEFOLD_CHECK(from_final_epoch >= 0 && from_final_epoch <= per_epoch + 1);
  plan.separate_final_epoch =
      from_final_epoch < static_cast<int64_t>(0.80 * static_cast<double>(per_epoch));
  return plan;
}

std::vector<int64_t> build_document_index(std::span<const int64_t> documents,
                                          const EpochPlan& plan, NumpyRandomState* rng) {
  const int64_t n = static_cast<int64_t>(documents.size());
  std::vector<int64_t> index(n * plan.num_epochs);
  for (int64_t e = 0; e < plan.num_epochs; ++e) {
    std::copy(documents.begin(), documents.end(), index.begin() + e * n);
  }
  if (rng == nullptr) return index;
  if (plan.separate_final_epoch) {
    rng->shuffle(std::span<int64_t>(index.data(), n * (plan.num_epochs - 1)));
    rng->shuffle(std::span<int64_t>(index.data() + n * (plan.num_epochs - 1), n));
  } else {
    rng->shuffle(std::span<int64_t>(index));
  }
  return index;
}

std::vector<SampleBoundary> build_sample_index(std::span<const int32_t> sizes_N,
                                               std::span<const int64_t> document_index,
                                               int64_t seq_length, int64_t num_epochs,
                                               int64_t tokens_per_epoch) {
  const int64_t num_samples = (num_epochs * tokens_per_epoch - 1) / seq_length;
  std::vector<SampleBoundary> boundaries;
  boundaries.reserve(num_samples + 1);
  int64_t position = 0;  // in document_index
  int64_t offset = 0;    // inside document_index[position]
  boundaries.push_back({position, offset});
  const int64_t last_position = static_cast<int64_t>(document_index.size()) - 1;
  for (int64_t s = 1; s <= num_samples; ++s) {
    // Walk seq_length + 1 tokens forward; the sample ends on the token at the new boundary,
    // which the next sample starts with.
    int64_t remaining = seq_length + 1;
    while (remaining != 0) {
      const int64_t left_in_document = sizes_N[document_index[position]] - offset;
      remaining -= left_in_document;
      if (remaining <= 0) {
        offset += remaining + left_in_document - 1;
        remaining = 0;
      } else if (position == last_position) {
        MOEFOLD_CHECK(s == num_samples, "ran out of documents at sample " << s);
        offset = sizes_N[document_index[position]] - 1;
        break;
      } else {
        ++position;
        offset = 0;
      }
    }
    boundaries.push_back({position, offset});
  }
  return boundaries;
}

std::vector<int64_t> build_shuffle_index(int64_t num_shuffled_together, int64_t total,
                                         NumpyRandomState* rng) {
  MOEFOLD_CHECK(num_shuffled_together >= 0 && num_shuffled_together <= total);
  std::vector<int64_t> index(total);
  std::iota(index.begin(), index.end(), 0);
  rng->shuffle(std::span<int64_t>(index.data(), num_shuffled_together));
  if (num_shuffled_together < total) {
    rng->shuffle(std::span<int64_t>(index.data() + num_shuffled_together,
                                    total - num_shuffled_together));
  }
  return index;
}

}  // namespace moefold
