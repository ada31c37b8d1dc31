// Megatron's GPTDataset: samples of seq_length + 1 tokens cut from the concatenation of a range
// of sequences of an IndexedDataset, over as many epochs as the requested samples need, in an
// order shuffled by seed (tokens = sample[:-1], labels = sample[1:]).
//
// The document, sample and shuffle indices (sample_index.h) equal Megatron's for the same seed.
// They are cached in one file per parameter set (named by a hash of the parameters, in
// data_cache_path or beside the data in <dir>/cache/) and reused. What differs from Megatron:
// the cache is one file of our own format, not three .npy files; the cache name hashes our own
// description of the parameters; there is no mock dataset and no partial last sample.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/indexed_dataset.h"
#include "data/sample_dataset.h"
#include "data/sample_index.h"

namespace moefold {

struct GptDatasetOptions {
  int64_t seq_length = 0;
  int64_t num_samples = 0;     // at least this many samples (whole epochs); 0 = one epoch
  uint32_t seed = 1234;        // numpy.random.RandomState seed, as Megatron's random_seed
  int64_t vocab_size = 0;      // token ids must be < vocab_size; 0 = not checked
  std::string cache_dir;       // empty = <directory of the prefix>/cache
  bool use_cache = true;       // false: build in memory, read and write no cache file
  std::string split_name = "train";  // for the cache name and messages
};

class GptDataset final : public SampleDataset {
 public:
  // Samples over the sequences [first_sequence, end_sequence) of `indexed`.
  static absl::StatusOr<std::shared_ptr<const GptDataset>> build(
      std::shared_ptr<const IndexedDataset> indexed, int64_t first_sequence,
      int64_t end_sequence, const GptDatasetOptions& options);

  int64_t size() const override { return static_cast<int64_t>(shuffle_index_.size()); }
  int64_t seq_length() const override { return options_.seq_length; }
  absl::Status sample(int64_t index, std::vector<int32_t>* out_S1) const override;
  std::string describe() const override;

  const std::vector<int64_t>& document_index() const { return document_index_; }
  const std::vector<SampleBoundary>& sample_index() const { return sample_index_; }
  const std::vector<int64_t>& shuffle_index() const { return shuffle_index_; }
  int64_t num_epochs() const { return num_epochs_; }
  const std::string& cache_file() const { return cache_file_; }  // empty when not cached
  bool loaded_from_cache() const { return loaded_from_cache_; }

 private:
  GptDataset() = default;
  void build_indices(int64_t tokens_per_epoch);
  bool load_cache(const std::string& description);
  void save_cache(const std::string& description) const;

  std::shared_ptr<const IndexedDataset> indexed_;
  int64_t first_sequence_ = 0;
  int64_t end_sequence_ = 0;
  GptDatasetOptions options_;
  int64_t num_epochs_ = 1;
  std::vector<int64_t> document_index_;       // (documents · epochs) sequence ids
  std::vector<SampleBoundary> sample_index_;  // (samples + 1)
  std::vector<int64_t> shuffle_index_;        // (samples)
  std::string cache_file_;
  bool loaded_from_cache_ = false;
};

}  // namespace moefold
