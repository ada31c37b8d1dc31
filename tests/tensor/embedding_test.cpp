// The embedding through the seam (tensor/ops.h): gathers, scatter-adds, finite differences and a
// vocabulary shard.
#include <gtest/gtest.h>

#include <vector>

#include "tensor/check.h"
#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;

Tensor rows_of(int64_t rows, int64_t H, const std::vector<float>& values) {
  return Tensor::from_vector({rows, H}, values);
}

int64_t count(const std::vector<int32_t>& tokens) { return static_cast<int64_t>(tokens.size()); }

TEST(Embedding, ForwardGathersRows) {
  const int64_t V = 7, H = 5;
  const std::vector<int32_t> tokens = {3, 0, 6, 3};
  const auto table = random_floats(V * H, 1);
  const Tensor out_t = Tensor::zeros({count(tokens), H});
  ops::embedding_forward(tokens, rows_of(V, H, table), out_t, V, 0);
  const std::vector<float> out = out_t.to_vector();
  for (size_t n = 0; n < tokens.size(); ++n) {
    for (int64_t h = 0; h < H; ++h) EXPECT_EQ(out[n * H + h], table[tokens[n] * H + h]);
  }
}

TEST(Embedding, BackwardScatterAddsRepeatedTokens) {
  const int64_t V = 5, H = 3;
  const std::vector<int32_t> tokens = {4, 1, 4, 4};
  const auto dout = random_floats(tokens.size() * H, 2);
  const auto before = random_floats(V * H, 3);
  const Tensor dtable = rows_of(V, H, before);
  ops::embedding_backward(rows_of(count(tokens), H, dout), tokens, dtable, V, 0);
  std::vector<double> expected(before.begin(), before.end());
  for (size_t n = 0; n < tokens.size(); ++n) {
    for (int64_t h = 0; h < H; ++h) expected[tokens[n] * H + h] += dout[n * H + h];
  }
  testing::expect_close(dtable.to_vector(), expected, 1e-6, 1e-6, "dtable");
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t V = 4, H = 3;
  const std::vector<int32_t> tokens = {2, 2, 0, 3, 2};
  auto table = random_floats(V * H, 4);
  const auto dout = random_floats(tokens.size() * H, 5);
  auto loss = [&] {
    const Tensor out = Tensor::zeros({count(tokens), H});
    ops::embedding_forward(tokens, rows_of(V, H, table), out, V, 0);
    return testing::weighted_sum(dout, out.to_vector());
  };
  const Tensor dtable = Tensor::zeros({V, H});
  ops::embedding_backward(rows_of(count(tokens), H, dout), tokens, dtable, V, 0);
  testing::expect_gradient_matches(table, dtable.to_vector(), loss, 1e-2f, 1e-3, 1e-3, "dtable");
}

TEST(Embedding, VocabularyShardGathersItsRowsAndZeroesTheOthers) {
  const int64_t V = 8, H = 2, first = 3, rows = 3;  // the shard holds vocabulary rows 3, 4, 5
  const std::vector<int32_t> tokens = {4, 0, 5, 7, 3};
  const auto table = random_floats(rows * H, 6);
  const Tensor out_t = rows_of(count(tokens), H, std::vector<float>(tokens.size() * H, -1.0f));
  ops::embedding_forward(tokens, rows_of(rows, H, table), out_t, V, first);
  const Tensor dtable_t = Tensor::zeros({rows, H});
  ops::embedding_backward(out_t, tokens, dtable_t, V, first);
  const std::vector<float> out = out_t.to_vector(), dtable = dtable_t.to_vector();
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
  const Tensor table = rows_of(4, 2, std::vector<float>(4 * 2, 1.0f));
  EXPECT_THROW(ops::embedding_forward(tokens, table, Tensor::zeros({2, 2}), 4, 0), InternalError);
}

}  // namespace
}  // namespace moefold
