// The index arrays of Megatron's GPTDataset, as pure functions (no files, no I/O):
//   document index: the split's sequences repeated over epochs, shuffled;
//   sample index:   where each sample of seq_length + 1 tokens starts in the concatenation of the
//                   documents in document-index order, as (document-index position, offset);
//   shuffle index:  a permutation of the samples.
// They follow megatron/core/datasets/gpt_dataset.py and helpers.cpp (build_sample_idx) with
// drop_last_partial_sequence and one extra token per sample. The shuffles reproduce
// numpy.random.RandomState(seed).shuffle bit for bit, so for the same seed the indices are the
// ones Megatron builds.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace moefold {

// numpy.random.RandomState(seed) restricted to what Megatron's index building uses: MT19937
// seeded by init_genrand, and the legacy shuffle (Fisher-Yates from the end, bounded draws by
// masked rejection). Bit-identical to numpy's output for the same seed.
class NumpyRandomState {
 public:
  explicit NumpyRandomState(uint32_t seed) : engine_(seed) {}
  // A uniform integer in [0, max] (numpy's random_interval).
  uint64_t random_interval(uint64_t max);
  template <typename T>
  void shuffle(std::span<T> values) {
    for (size_t i = values.size(); i-- > 1;) {
      const size_t j = static_cast<size_t>(random_interval(i));
      std::swap(values[i], values[j]);
    }
  }

 private:
  std::mt19937 engine_;
};

struct SampleBoundary {
  int64_t document_position;  // position in the document index
  int64_t offset;             // token offset inside that document
  bool operator==(const SampleBoundary&) const = default;
};

// The epoch plan for a split holding tokens_per_epoch tokens: enough epochs for num_samples
// samples (0 = one epoch), and whether the last epoch is shuffled on its own (Megatron does so
// when it contributes less than 80% of an epoch's samples, so that the partial epoch does not
// get mixed into the earlier ones).
struct EpochPlan {
  int64_t num_epochs = 1;
  bool separate_final_epoch = false;
  int64_t samples_before_final_epoch = 0;  // samples of the first num_epochs - 1 epochs
};
EpochPlan plan_epochs(int64_t tokens_per_epoch, int64_t seq_length, int64_t num_samples);

// documents (the split's sequence ids) tiled num_epochs times. With rng, shuffled as Megatron
// does (the final epoch separately when plan.separate_final_epoch); without, in order.
std::vector<int64_t> build_document_index(std::span<const int64_t> documents,
                                          const EpochPlan& plan, NumpyRandomState* rng);

// Sample boundaries for the documents in document-index order: num_samples + 1 entries with
// num_samples = (num_epochs · tokens_per_epoch − 1) / seq_length. Sample i covers the tokens
// from boundary i up to and including the token at boundary i + 1, so consecutive samples
// share one token (the last label of one is the first input of the next).
// sizes_N are the lengths of all sequences, indexed by the ids in document_index.
std::vector<SampleBoundary> build_sample_index(std::span<const int32_t> sizes_N,
                                               std::span<const int64_t> document_index,
                                               int64_t seq_length, int64_t num_epochs,
                                               int64_t tokens_per_epoch);

// A permutation of [0, total): [0, num_shuffled_together) shuffled, then the rest on its own.
std::vector<int64_t> build_shuffle_index(int64_t num_shuffled_together, int64_t total,
                                         NumpyRandomState* rng);

}  // namespace moefold
