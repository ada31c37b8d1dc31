#include "tensor/cpu/embedding.h"

#include <gtest/gtest.h>

#include <vector>

#include "tensor/check.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;

TEST(Embedding, ForwardGathersRows) {
  const int64_t V = 7, H = 5;
  const std::vector<int32_t> tokens = {3, 0, 6, 3};
  const auto table = random_floats(V * H, 1);
  std::vector<float> out(tokens.size() * H);
  embedding_forward(tokens.data(), table.data(), out.data(), tokens.size(), V, 0, V, H);
  for (size_t n = 0; n < tokens.size(); ++n) {
    for (int64_t h = 0; h < H; ++h) EXPECT_EQ(out[n * H + h], table[tokens[n] * H + h]);
  }
}

TEST(Embedding, BackwardScatterAddsRepeatedTokens) {
  const int64_t V = 5, H = 3;
  const std::vector<int32_t> tokens = {4, 1, 4, 4};
  const auto dout = random_floats(tokens.size() * H, 2);
  auto dtable = random_floats(V * H, 3);
  const auto before = dtable;
  embedding_backward(dout.data(), tokens.data(), dtable.data(), tokens.size(), V, 0, V, H);
  std::vector<double> expected(before.begin(), before.end());
  for (size_t n = 0; n < tokens.size(); ++n) {
    for (int64_t h = 0; h < H; ++h) expected[tokens[n] * H + h] += dout[n * H + h];
  }
  moefold::testing::expect_close(dtable, expected, 1e-6, 1e-6, "dtable");
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t V = 4, H = 3;
  const std::vector<int32_t> tokens = {2, 2, 0, 3, 2};
  auto table = random_floats(V * H, 4);
  const auto dout = random_floats(tokens.size() * H, 5);
  auto loss = [&] {
    std::vector<float> out(tokens.size() * H);
    embedding_forward(tokens.data(), table.data(), out.data(), tokens.size(), V, 0, V, H);
    return moefold::testing::weighted_sum(dout, out);
  };
  std::vector<float> dtable(V * H, 0.0f);
  embedding_backward(dout.data(), tokens.data(), dtable.data(), tokens.size(), V, 0, V, H);
  moefold::testing::expect_gradient_matches(table, dtable, loss, 1e-2f, 1e-3, 1e-3, "dtable");
}

TEST(Embedding, VocabularyShardGathersItsRowsAndZeroesTheOthers) {
  const int64_t V = 8, H = 2, first = 3, rows = 3;  // the shard holds vocabulary rows 3, 4, 5
  const std::vector<int32_t> tokens = {4, 0, 5, 7, 3};
  const auto table = random_floats(rows * H, 6);
  std::vector<float> out(tokens.size() * H, -1.0f);
  embedding_forward(tokens.data(), table.data(), out.data(), tokens.size(), V, first, rows, H);
  std::vector<float> dtable(rows * H, 0.0f);
  embedding_backward(out.data(), tokens.data(), dtable.data(), tokens.size(), V, first, rows, H);
  for (size_t n = 0; n < tokens.size(); ++n) {
    const bool held = tokens[n] >= first && tokens[n] < first + rows;
    for (int64_t h = 0; h < H; ++h) {
      EXPECT_EQ(out[n * H + h], held ? table[(tokens[n] - first) * H + h] : 0.0f);
    }
  }
  for (int64_t i = 0; i < rows * H; ++i) EXPECT_EQ(dtable[i], table[i]);  // each row met once
}

TEST(Embedding, OutOfRangeTokenIsAnInternalError) {
  const std::vector<int32_t> tokens = {1, 9};
  const std::vector<float> table(4 * 2, 1.0f);
  std::vector<float> out(2 * 2);
  EXPECT_THROW(embedding_forward(tokens.data(), table.data(), out.data(), 2, 4, 0, 4, 2),
               InternalError);
}

}  // namespace
}  // namespace moefold::cpu
