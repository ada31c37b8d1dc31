#include "data/blended_dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "data/dataset_builder.h"
#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::counting_documents;
using testing_util::scratch_dir;
using testing_util::write_documents;

TEST(BlendingIndices, EveryPrefixFollowsTheWeights) {
  const std::vector<double> weights = {0.5, 0.3, 0.2};
  const BlendingIndices idx = build_blending_indices(weights, 1000);
  std::vector<int64_t> taken(3, 0);
  for (int64_t i = 0; i < 1000; ++i) {
    const int32_t d = idx.dataset_index[i];
    // Each dataset's samples are used in order, from 0.
    EXPECT_EQ(idx.dataset_sample_index[i], taken[d]);
    ++taken[d];
    for (int k = 0; k < 3; ++k) {
      EXPECT_LE(std::abs(static_cast<double>(taken[k]) - weights[k] * (i + 1)), 1.0)
          << "dataset " << k << " after " << i + 1 << " samples";
    }
  }
  EXPECT_EQ(taken, (std::vector<int64_t>{500, 300, 200}));
  EXPECT_EQ(blend_sample_counts(weights, 1000), taken);
}

TEST(BlendingIndices, GreedyOrderByWeightError) {
  // Weights 0.8 / 0.2 (given unnormalised): Megatron's greedy choice, worked by hand.
  // i=0: errors 0.8·1−0, 0.2·1−0 → 0;  i=1: 0.8−1 < 0.2 → 1;  i=2: 1.6−1, 0.4−1 → 0;
  // i=3: 2.4−2 = 0.4, 0.6−1 → 0;  i=4: 3.2−3, 0.8−1 → 0.
  const std::vector<double> weights = {4, 1};
  const BlendingIndices idx = build_blending_indices(weights, 5);
  EXPECT_EQ(idx.dataset_index, (std::vector<int32_t>{0, 1, 0, 0, 0}));
  EXPECT_EQ(idx.dataset_sample_index, (std::vector<int64_t>{0, 0, 1, 2, 3}));
}

TEST(BlendedDataset, BlendOfTwoPrefixesMatchesWeights) {
  const std::string dir = scratch_dir();
  // Prefix a holds tokens 0..999, prefix b tokens 1000..1999: a sample says where it is from.
  write_documents(dir + "/a", counting_documents(std::vector<int>(20, 50), 0));
  write_documents(dir + "/b", counting_documents(std::vector<int>(10, 100), 1000));
  DataConfig config;
  config.data_path = {"0.8 " + dir + "/a 0.2 " + dir + "/b"};
  config.split = "1,0,0";
  GptDatasetsOptions options;
  options.seq_length = 16;
  options.vocab_size = 2000;
  options.num_samples = {500, 0, 0};
  auto built = build_gpt_datasets(config, options);
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_EQ(built->train->size(), 500);
  EXPECT_THAT(built->train->describe(), HasSubstr("blend of 0.8 × train split of"));
  int from_a = 0;
  for (int64_t j = 0; j < 500; ++j) {
    std::vector<int32_t> sample;
    ASSERT_TRUE(built->train->sample(j, &sample).ok());
    const bool a = sample[0] < 1000;
    for (int32_t t : sample) EXPECT_EQ(t < 1000, a) << "sample " << j << " mixes datasets";
    from_a += a;
  }
  EXPECT_EQ(from_a, 400);
  EXPECT_EQ(built->valid, nullptr);
}

TEST(BlendedDataset, DataPathAsSeparateEntriesAndErrors) {
  auto parsed = parse_data_path({"0.7", "x", "0.3", "y"});
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].prefix, "y");
  EXPECT_DOUBLE_EQ((*parsed)[1].weight, 0.3);
  auto single = parse_data_path({"data/x"});
  ASSERT_TRUE(single.ok());
  EXPECT_EQ((*single)[0].prefix, "data/x");
  EXPECT_DOUBLE_EQ((*single)[0].weight, 1.0);
  EXPECT_THAT(std::string(parse_data_path({"0.5 a b"}).status().message()),
              HasSubstr("pairs of weight and prefix"));
  EXPECT_THAT(std::string(parse_data_path({"-1 a 2 b"}).status().message()),
              HasSubstr("weight '-1' of 'a' is not a positive number"));
  EXPECT_FALSE(parse_data_path({}).ok());
}

}  // namespace
}  // namespace moefold
