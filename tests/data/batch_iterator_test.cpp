#include "data/batch_iterator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "data/gpt_dataset.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::counting_documents;
using testing_util::scratch_dir;
using testing_util::write_documents;

// A dataset of 64+ samples of seq_length 5 over 30 documents of mixed sizes.
std::shared_ptr<const SampleDataset> small_dataset(int64_t vocab_size = 0) {
  const std::string prefix = scratch_dir() + "/ds";
  std::vector<int> sizes;
  for (int d = 0; d < 30; ++d) sizes.push_back(3 + (d * 7) % 11);
  write_documents(prefix, counting_documents(sizes));
  auto indexed = IndexedDataset::open(prefix);
  EXPECT_TRUE(indexed.ok());
  GptDatasetOptions options;
  options.seq_length = 5;
  options.num_samples = 64;
  options.vocab_size = vocab_size;
  options.use_cache = false;
  auto ds = GptDataset::build(*indexed, 0, 30, options);
  EXPECT_TRUE(ds.ok()) << ds.status();
  return *ds;
}

BatchIterator make_iterator(std::shared_ptr<const SampleDataset> ds, int64_t g, int64_t b, int r,
                            int d, int64_t consumed) {
  BatchIteratorOptions options;
  options.global_batch_size = g;
  options.micro_batch_size = b;
  options.data_parallel_rank = r;
  options.data_parallel_size = d;
  auto it = BatchIterator::create(std::move(ds), options, consumed);
  EXPECT_TRUE(it.ok()) << it.status();
  return std::move(*it);
}

// The rows of a rank's micro-batches, in order.
std::vector<std::vector<int32_t>> rows(const std::vector<MicroBatch>& batches) {
  std::vector<std::vector<int32_t>> out;
  for (const MicroBatch& mb : batches) {
    for (int i = 0; i < mb.batch; ++i) {
      out.emplace_back(mb.tokens.begin() + i * mb.seq, mb.tokens.begin() + (i + 1) * mb.seq);
    }
  }
  return out;
}

TEST(BatchIterator, TokensAndLabelsAreTheSampleShiftedByOne) {
  auto ds = small_dataset();
  BatchIterator it = make_iterator(ds, 4, 2, 0, 1, 0);
  auto batch = it.next_global_batch();
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 2u);
  for (int m = 0; m < 2; ++m) {
    const MicroBatch& mb = (*batch)[m];
    ASSERT_EQ(mb.batch, 2);
    ASSERT_EQ(mb.seq, 5);
    ASSERT_EQ(mb.tokens.size(), 10u);
    for (int i = 0; i < 2; ++i) {
      std::vector<int32_t> sample;
      ASSERT_TRUE(ds->sample(m * 2 + i, &sample).ok());
      for (int t = 0; t < 5; ++t) {
        EXPECT_EQ(mb.tokens[i * 5 + t], sample[t]);
        EXPECT_EQ(mb.labels[i * 5 + t], sample[t + 1]);
        EXPECT_EQ(mb.loss_mask[i * 5 + t], 1.0f);
      }
    }
  }
  EXPECT_EQ(it.consumed_samples(), 4);
}

TEST(BatchIterator, ResumingFromConsumedSamplesIsTheTail) {
  auto ds = small_dataset();
  BatchIterator from_start = make_iterator(ds, 8, 2, 0, 1, 0);
  std::vector<std::vector<std::vector<int32_t>>> all;
  for (int i = 0; i < 6; ++i) {
    auto batch = from_start.next_global_batch();
    ASSERT_TRUE(batch.ok());
    all.push_back(rows(*batch));
  }
  for (int k = 0; k < 6; ++k) {
    BatchIterator resumed = make_iterator(ds, 8, 2, 0, 1, 8 * k);
    for (int i = k; i < 6; ++i) {
      auto batch = resumed.next_global_batch();
      ASSERT_TRUE(batch.ok());
      EXPECT_EQ(rows(*batch), all[i]) << "resumed at iteration " << k << ", iteration " << i;
    }
  }
}

TEST(BatchIterator, RanksPartitionTheGlobalBatchInRankOrder) {
  auto ds = small_dataset();
  const int64_t g = 16;
  for (int64_t consumed : {0, 16, 32}) {
    BatchIterator single = make_iterator(ds, g, 2, 0, 1, consumed);
    const auto reference = rows(*single.next_global_batch());
    ASSERT_EQ(reference.size(), 16u);
    for (int d : {2, 4, 8}) {
      for (int64_t b : {1, 2}) {
        std::vector<std::vector<int32_t>> joined;
        for (int r = 0; r < d; ++r) {
          BatchIterator it = make_iterator(ds, g, b, r, d, consumed);
          EXPECT_EQ(it.num_micro_batches(), g / (b * d));
          const auto part = rows(*it.next_global_batch());
          EXPECT_EQ(part.size(), static_cast<size_t>(g / d));
          joined.insert(joined.end(), part.begin(), part.end());
        }
        EXPECT_EQ(joined, reference) << "D=" << d << " B=" << b << " consumed " << consumed;
      }
    }
  }
}

TEST(BatchIterator, EodMaskLossZeroesEndOfDocumentLabels) {
  const std::string prefix = scratch_dir() + "/ds";
  write_documents(prefix, {{1, 2, 9}, {3, 9}, {4, 5, 6, 9}, {7, 8, 9}});
  auto indexed = IndexedDataset::open(prefix);
  ASSERT_TRUE(indexed.ok());
  GptDatasetOptions gpt;
  gpt.seq_length = 3;
  gpt.use_cache = false;
  auto ds = GptDataset::build(*indexed, 0, 4, gpt);
  ASSERT_TRUE(ds.ok());
  BatchIteratorOptions options;
  options.global_batch_size = 3;
  options.micro_batch_size = 3;
  options.eod_id = 9;
  options.eod_mask_loss = true;
  auto it = BatchIterator::create(*ds, options, 0);
  ASSERT_TRUE(it.ok());
  auto batch = it->next_global_batch();
  ASSERT_TRUE(batch.ok());
  const MicroBatch& mb = (*batch)[0];
  int masked = 0;
  for (size_t k = 0; k < mb.labels.size(); ++k) {
    EXPECT_EQ(mb.loss_mask[k], mb.labels[k] == 9 ? 0.0f : 1.0f);
    masked += mb.labels[k] == 9;
  }
  EXPECT_GT(masked, 0);
}

TEST(BatchIterator, ClearErrors) {
  auto ds = small_dataset();
  BatchIteratorOptions options;
  options.global_batch_size = 10;
  options.micro_batch_size = 2;
  options.data_parallel_size = 4;
  EXPECT_EQ(std::string(BatchIterator::create(ds, options, 0).status().message()),
            "global_batch_size 10 is not divisible by micro_batch_size 2 × data-parallel size 4");
  options.global_batch_size = 8;
  options.data_parallel_rank = 4;
  EXPECT_THAT(std::string(BatchIterator::create(ds, options, 0).status().message()),
              HasSubstr("data-parallel rank 4 outside [0, 4)"));

  // Past the end of the dataset.
  BatchIterator it = make_iterator(ds, 8, 2, 0, 1, ds->size() - 4);
  auto past = it.next_global_batch();
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(past.status().message()), HasSubstr("train split of"));
}

TEST(BatchIterator, TokenBeyondVocabularyNamesTheFile) {
  auto ds = small_dataset(/*vocab_size=*/50);
  BatchIterator it = make_iterator(ds, 64, 8, 0, 1, 0);
  auto batch = it.next_global_batch();
  ASSERT_FALSE(batch.ok());
  EXPECT_THAT(std::string(batch.status().message()), HasSubstr("ds.bin (sequence "));
  EXPECT_THAT(std::string(batch.status().message()), HasSubstr(") ≥ vocab size 50"));
}

}  // namespace
}  // namespace moefold
