#include "data/gpt_dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "data/dataset_builder.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::counting_documents;
using testing_util::scratch_dir;
using testing_util::write_documents;

std::shared_ptr<const IndexedDataset> open_or_die(const std::string& prefix) {
  auto ds = IndexedDataset::open(prefix);
  EXPECT_TRUE(ds.ok()) << ds.status();
  return *ds;
}

// Sample j is the window of seq_length + 1 tokens starting at token shuffle[j] · seq_length of
// the documents concatenated in document-index order.
void expect_samples_are_windows(const GptDataset& ds, const std::vector<int>& sizes) {
  const auto docs = counting_documents(sizes);
  std::vector<int32_t> stream;
  for (int64_t d : ds.document_index()) stream.insert(stream.end(), docs[d].begin(), docs[d].end());
  const int64_t s = ds.seq_length();
  for (int64_t j = 0; j < ds.size(); ++j) {
    std::vector<int32_t> sample;
    ASSERT_TRUE(ds.sample(j, &sample).ok());
    const int64_t start = ds.shuffle_index()[j] * s;
    ASSERT_LE(start + s + 1, static_cast<int64_t>(stream.size()));
    EXPECT_EQ(sample, std::vector<int32_t>(stream.begin() + start, stream.begin() + start + s + 1))
        << "sample " << j;
  }
}

TEST(GptDataset, HandWorkedSamples) {
  const std::string prefix = scratch_dir() + "/ds";
  write_documents(prefix, counting_documents({5, 3, 7}));
  GptDatasetOptions options;
  options.seq_length = 4;
  options.use_cache = false;
  auto ds = GptDataset::build(open_or_die(prefix), 0, 3, options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->size(), 3);
  expect_samples_are_windows(**ds, {5, 3, 7});
  // Every sample, unshuffled, in document order: collect them by their shuffled position.
  std::set<std::vector<int32_t>> samples;
  for (int64_t j = 0; j < 3; ++j) {
    std::vector<int32_t> sample;
    ASSERT_TRUE((*ds)->sample(j, &sample).ok());
    samples.insert(sample);
  }
  EXPECT_EQ(samples.size(), 3u);
}

TEST(GptDataset, ManyEpochsCoverTheRequestedSamples) {
  const std::string prefix = scratch_dir() + "/ds";
  const std::vector<int> sizes = {5, 3, 7, 2, 9, 4, 1, 11};
  write_documents(prefix, counting_documents(sizes));
  GptDatasetOptions options;
  options.seq_length = 6;
  options.num_samples = 40;  // 42 tokens per epoch: 40 · 6 + 1 tokens take 6 epochs
  options.seed = 99;
  options.use_cache = false;
  auto ds = GptDataset::build(open_or_die(prefix), 0, 8, options);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_epochs(), 6);
  EXPECT_GE((*ds)->size(), 40);
  expect_samples_are_windows(**ds, sizes);
}

TEST(GptDataset, DeterministicForASeed) {
  const std::string prefix = scratch_dir() + "/ds";
  write_documents(prefix, counting_documents({5, 3, 7, 2, 9, 4, 8, 8, 8}));
  GptDatasetOptions options;
  options.seq_length = 3;
  options.use_cache = false;
  auto a = GptDataset::build(open_or_die(prefix), 0, 9, options);
  auto b = GptDataset::build(open_or_die(prefix), 0, 9, options);
  options.seed = 4321;
  auto c = GptDataset::build(open_or_die(prefix), 0, 9, options);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ((*a)->shuffle_index(), (*b)->shuffle_index());
  EXPECT_EQ((*a)->document_index(), (*b)->document_index());
  EXPECT_NE((*a)->shuffle_index(), (*c)->shuffle_index());
}

TEST(GptDataset, CachesIndicesAndReusesThem) {
  const std::string dir = scratch_dir();
  const std::string prefix = dir + "/ds";
  write_documents(prefix, counting_documents({5, 3, 7, 2, 9, 4}));
  GptDatasetOptions options;
  options.seq_length = 4;
  options.num_samples = 10;
  auto first = GptDataset::build(open_or_die(prefix), 0, 6, options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE((*first)->loaded_from_cache());
  EXPECT_EQ(std::filesystem::path((*first)->cache_file()).parent_path(),
            std::filesystem::path(dir) / "cache");
  ASSERT_TRUE(std::filesystem::exists((*first)->cache_file()));

  auto second = GptDataset::build(open_or_die(prefix), 0, 6, options);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE((*second)->loaded_from_cache());
  EXPECT_EQ((*second)->cache_file(), (*first)->cache_file());
  EXPECT_EQ((*second)->document_index(), (*first)->document_index());
  EXPECT_EQ((*second)->sample_index(), (*first)->sample_index());
  EXPECT_EQ((*second)->shuffle_index(), (*first)->shuffle_index());
  EXPECT_EQ((*second)->num_epochs(), (*first)->num_epochs());

  // Other parameters name another file.
  options.seed = 5;
  auto reseeded = GptDataset::build(open_or_die(prefix), 0, 6, options);
  ASSERT_TRUE(reseeded.ok());
  EXPECT_FALSE((*reseeded)->loaded_from_cache());
  EXPECT_NE((*reseeded)->cache_file(), (*first)->cache_file());

  // A damaged cache file is rebuilt, not trusted.
  options.seed = 1234;
  std::filesystem::resize_file((*first)->cache_file(), 40);
  auto rebuilt = GptDataset::build(open_or_die(prefix), 0, 6, options);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_FALSE((*rebuilt)->loaded_from_cache());
  EXPECT_EQ((*rebuilt)->shuffle_index(), (*first)->shuffle_index());

  // An explicit cache directory.
  options.cache_dir = dir + "/elsewhere";
  auto elsewhere = GptDataset::build(open_or_die(prefix), 0, 6, options);
  ASSERT_TRUE(elsewhere.ok());
  EXPECT_EQ(std::filesystem::path((*elsewhere)->cache_file()).parent_path(),
            std::filesystem::path(dir) / "elsewhere");
}

TEST(GptDataset, TooFewTokensIsAClearError) {
  const std::string prefix = scratch_dir() + "/ds";
  write_documents(prefix, counting_documents({1, 0}));
  GptDatasetOptions options;
  options.seq_length = 4;
  options.use_cache = false;
  auto ds = GptDataset::build(open_or_die(prefix), 0, 2, options);
  ASSERT_FALSE(ds.ok());
  EXPECT_THAT(std::string(ds.status().message()),
              HasSubstr("the train split (sequences 0 to 2) holds 1 tokens"));
}

TEST(Split, ParsesAndNormalises) {
  auto s = parse_split("969,30,1");
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ((*s)[0], 0.969);
  EXPECT_DOUBLE_EQ((*s)[1], 0.030);
  EXPECT_DOUBLE_EQ((*s)[2], 0.001);
  auto two = parse_split("90/10");
  ASSERT_TRUE(two.ok());
  EXPECT_DOUBLE_EQ((*two)[2], 0.0);
  EXPECT_FALSE(parse_split("90,x,10").ok());
  EXPECT_FALSE(parse_split("0,0,0").ok());
  EXPECT_FALSE(parse_split("1,2,3,4").ok());
  EXPECT_THAT(std::string(parse_split("9,-1,1").status().message()),
              HasSubstr("data.split '9,-1,1': '-1' is not a non-negative number"));
}

TEST(Split, BoundariesFollowMegatron) {
  EXPECT_EQ(split_boundaries(*parse_split("969,30,1"), 1000),
            (std::array<int64_t, 4>{0, 969, 999, 1000}));
  EXPECT_EQ(split_boundaries(*parse_split("90,5,5"), 100), (std::array<int64_t, 4>{0, 90, 95, 100}));
  // round(9.0) = 9, round(0.5) = 0 (half to even) twice; the shortfall of 1 shifts every
  // boundary up, as Megatron's get_split_indices does.
  EXPECT_EQ(split_boundaries(*parse_split("90,5,5"), 10), (std::array<int64_t, 4>{0, 10, 10, 10}));
  EXPECT_EQ(split_boundaries(*parse_split("1,1,1"), 7), (std::array<int64_t, 4>{0, 3, 5, 7}));
}

TEST(Split, DatasetsDrawOnlyFromTheirOwnDocuments) {
  const std::string prefix = scratch_dir() + "/ds";
  // 10 documents of 20 tokens: document d holds tokens 20d .. 20d + 19.
  write_documents(prefix, counting_documents(std::vector<int>(10, 20)));
  DataConfig config;
  config.data_path = {prefix};
  config.split = "6,2,2";
  GptDatasetsOptions options;
  options.seq_length = 8;
  options.vocab_size = 200;
  options.num_samples = {30, 5, 5};
  auto built = build_gpt_datasets(config, options);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::array<std::pair<int32_t, int32_t>, 3> token_ranges = {
      std::pair{0, 120}, std::pair{120, 160}, std::pair{160, 200}};
  const std::array<const SampleDataset*, 3> splits = {built->train.get(), built->valid.get(),
                                                      built->test.get()};
  for (int s = 0; s < 3; ++s) {
    ASSERT_NE(splits[s], nullptr);
    EXPECT_GE(splits[s]->size(), options.num_samples[s]);
    EXPECT_THAT(splits[s]->describe(), HasSubstr(kSplitNames[s]));
    for (int64_t j = 0; j < splits[s]->size(); ++j) {
      std::vector<int32_t> sample;
      ASSERT_TRUE(splits[s]->sample(j, &sample).ok());
      for (int32_t t : sample) {
        EXPECT_GE(t, token_ranges[s].first);
        EXPECT_LT(t, token_ranges[s].second);
      }
    }
  }
  // A split that is not asked for is not built.
  options.num_samples = {30, 0, 0};
  auto train_only = build_gpt_datasets(config, options);
  ASSERT_TRUE(train_only.ok());
  EXPECT_EQ(train_only->valid, nullptr);
  EXPECT_EQ(train_only->test, nullptr);
}

TEST(Split, BadSeedAndMissingDataAreClearErrors) {
  DataConfig config;
  config.data_path = {scratch_dir() + "/nothing"};
  GptDatasetsOptions options;
  options.seq_length = 8;
  options.num_samples = {1, 0, 0};
  auto missing = build_gpt_datasets(config, options);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nothing.idx: cannot open"));
  options.seed = uint64_t{1} << 33;
  EXPECT_THAT(std::string(build_gpt_datasets(config, options).status().message()),
              HasSubstr("must be below 2^32"));
}

}  // namespace
}  // namespace moefold
