#include "model/init.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/parameter.h"

namespace moefold {
namespace {

TEST(Philox, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                          {0xffffffffu, 0xffffffffu}),
            (std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                          {0xa4093822u, 0x299f31d0u}),
            (std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Fnv1a, KnownValues) {
  EXPECT_EQ(fnv1a_64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a_64("a"), 0xaf63dc4c8601ec8cull);
}

std::vector<float> init_full(const TensorLayout& layout, float std, uint64_t seed) {
  std::vector<float> out(layout.local_numel());
  init_tensor(layout, InitKind::kNormal, std, seed, out.data());
  return out;
}

TEST(Init, ShardEqualsSliceOfFullTensor) {
  const auto full = TensorLayout::replicated("layers/1/moe/experts/w_gate", {4, 6, 8});
  const std::vector<float> all = init_full(full, 0.02f, 1234);
  // Split the expert axis in 2 and then the F axis in 3: shard (1, 2) holds [2:4, 4:6, :].
  const TensorLayout shard =
      full.split(0, ShardGroup::kExpert, 2, 1).split(1, ShardGroup::kExpertTensor, 3, 2);
  ASSERT_EQ(shard.local_shape, (std::vector<int64_t>{2, 2, 8}));
  ASSERT_EQ(shard.local_offset, (std::vector<int64_t>{2, 4, 0}));
  const std::vector<float> part = init_full(shard, 0.02f, 1234);
  for (int e = 0; e < 2; ++e) {
    for (int f = 0; f < 2; ++f) {
      for (int h = 0; h < 8; ++h) {
        EXPECT_EQ(part[(e * 2 + f) * 8 + h], all[((e + 2) * 6 + f + 4) * 8 + h]);
      }
    }
  }
  // A split of the last (contiguous) axis too.
  const TensorLayout cols = full.split(2, ShardGroup::kTensor, 4, 3);
  const std::vector<float> col_part = init_full(cols, 0.02f, 1234);
  for (int r = 0; r < 24; ++r) {
    for (int h = 0; h < 2; ++h) EXPECT_EQ(col_part[r * 2 + h], all[r * 8 + 6 + h]);
  }
}

TEST(Init, NormalStatistics) {
  const auto layout = TensorLayout::replicated("embed", {512, 512});
  const float std = 0.02f;
  const std::vector<float> v = init_full(layout, std, 7);
  double sum = 0, sum_sq = 0;
  for (float x : v) {
    sum += x;
    sum_sq += static_cast<double>(x) * x;
  }
  const double n = static_cast<double>(v.size());
  const double mean = sum / n, sd = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5.0 * std / std::sqrt(n));
  EXPECT_NEAR(sd / std, 1.0, 0.01);
  int64_t beyond = 0;  // P(|z| > 3) = 0.0027
  for (float x : v) beyond += std::abs(x) > 3 * std;
  EXPECT_NEAR(static_cast<double>(beyond) / n, 0.0027, 0.001);
}

TEST(Init, DifferentNamesAndSeedsDiffer) {
  const auto a = init_full(TensorLayout::replicated("layers/0/attn/wq", {64}), 1.0f, 1);
  const auto b = init_full(TensorLayout::replicated("layers/0/attn/wk", {64}), 1.0f, 1);
  const auto c = init_full(TensorLayout::replicated("layers/0/attn/wq", {64}), 1.0f, 2);
  const auto a2 = init_full(TensorLayout::replicated("layers/0/attn/wq", {64}), 1.0f, 1);
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < 64; ++i) {
    same_ab += a[i] == b[i];
    same_ac += a[i] == c[i];
  }
  EXPECT_EQ(same_ab, 0);
  EXPECT_EQ(same_ac, 0);
  EXPECT_EQ(a, a2);
}

TEST(ParameterRegistry, InitKindsAndFlags) {
  ParameterRegistry registry;
  Parameter* w = registry.add_weight(TensorLayout::replicated("w", {3, 4}), 0.5f);
  Parameter* n = registry.add_norm(TensorLayout::replicated("n", {4}));
  Buffer* b = registry.add_buffer(TensorLayout::replicated("b", {4}), InitKind::kZeros);
  b->value.fill(3.0f);
  registry.init(9);
  EXPECT_TRUE(w->weight_decay);
  EXPECT_FALSE(n->weight_decay);
  for (float x : n->value.to_vector()) EXPECT_EQ(x, 1.0f);
  for (float x : b->value.to_vector()) EXPECT_EQ(x, 0.0f);
  EXPECT_EQ(w->value.to_vector(), init_full(w->layout, 0.5f, 9));
  EXPECT_EQ(registry.find("n"), n);
  EXPECT_EQ(registry.find("missing"), nullptr);
  w->grad.fill(1.0f);
  registry.zero_grad();
  for (float x : w->grad.to_vector()) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace moefold
