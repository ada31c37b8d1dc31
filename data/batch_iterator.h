// This rank's micro-batches, iteration after iteration.
//
// Iteration i with c samples consumed before it takes the global batch of samples
// [c, c + G) of the dataset (G = global batch size). Data-parallel rank r of D takes the
// contiguous slice [r·M·B, (r+1)·M·B) of that global batch, in M = G / (B·D) micro-batches of
// B consecutive samples. So the global batch is the concatenation of the ranks' slices in rank
// order, whatever D is: a run with D ranks sees the same samples as one rank with D times the
// micro-batches, which is what the data-parallel invariance tests rely on. Resuming from a
// count of consumed samples is starting at that index.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "data/micro_batch.h"
#include "data/sample_dataset.h"

namespace moefold {

struct BatchIteratorOptions {
  int64_t global_batch_size = 0;  // G
  int64_t micro_batch_size = 0;   // B
  int data_parallel_rank = 0;     // r
  int data_parallel_size = 1;     // D
  int32_t eod_id = -1;            // end-of-document id (for eod_mask_loss)
  bool eod_mask_loss = false;     // loss_mask = 0 where the label is eod_id
};

class BatchIterator {
 public:
  // Fails with a message naming the setting when G is not a multiple of B·D.
  static absl::StatusOr<BatchIterator> create(std::shared_ptr<const SampleDataset> dataset,
                                              const BatchIteratorOptions& options,
                                              int64_t consumed_samples);

  int64_t num_micro_batches() const;  // M = G / (B·D)
  int64_t consumed_samples() const { return consumed_samples_; }
  // This rank's M micro-batches of the next global batch; advances consumed_samples by G.
  // Fails (OutOfRange) when the dataset has fewer than consumed + G samples, or on a data
  // error (a token id outside the vocabulary, naming the file).
  absl::StatusOr<std::vector<MicroBatch>> next_global_batch();
  // One micro-batch of the samples [first, first + B) of the dataset.
  absl::StatusOr<MicroBatch> micro_batch_at(int64_t first) const;

 private:
  BatchIterator(std::shared_ptr<const SampleDataset> dataset, const BatchIteratorOptions& options,
                int64_t consumed_samples)
      : dataset_(std::move(dataset)), options_(options), consumed_samples_(consumed_samples) {}

  std::shared_ptr<const SampleDataset> dataset_;
  BatchIteratorOptions options_;
  int64_t consumed_samples_;
};

}  // namespace moefold
