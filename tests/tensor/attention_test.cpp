// Attention through the seam (tensor/ops.h): forward against a float64 reference, the merge of
// partial results, and backward against finite differences and per-key-block sums.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using moefold::testing::random_floats;

struct Shape {
  int64_t B, Sq, Skv, nh, nkv, d;
};

std::vector<int32_t> iota_positions(int64_t n, int32_t start) {
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), start);
  return pos;
}

// Straightforward softmax attention in double; masked-out rows give o = 0, lse = −inf.
void reference_attention(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, const std::vector<int32_t>& q_pos,
                         const std::vector<int32_t>& k_pos, std::vector<double>& o,
                         std::vector<double>& lse) {
  o.assign(s.B * s.Sq * s.nh * s.d, 0.0);
  lse.assign(s.B * s.nh * s.Sq, -std::numeric_limits<double>::infinity());
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.nh; ++h) {
      const int64_t g = h / (s.nh / s.nkv);
      for (int64_t i = 0; i < s.Sq; ++i) {
        const float* qi = &q[((b * s.Sq + i) * s.nh + h) * s.d];
        std::vector<double> scores;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < s.Skv; ++j) {
          if (k_pos[j] > q_pos[i]) continue;
          const float* kj = &k[((b * s.Skv + j) * s.nkv + g) * s.d];
          double dot = 0.0;
          for (int64_t c = 0; c < s.d; ++c) dot += static_cast<double>(qi[c]) * kj[c];
          scores.push_back(dot * scale);
          keys.push_back(j);
        }
        if (keys.empty()) continue;
        double max = scores[0];
        for (double x : scores) max = std::max(max, x);
        double sum = 0.0;
        for (double x : scores) sum += std::exp(x - max);
        double* oi = &o[((b * s.Sq + i) * s.nh + h) * s.d];
        for (size_t t = 0; t < keys.size(); ++t) {
          const double p = std::exp(scores[t] - max) / sum;
          const float* vj = &v[((b * s.Skv + keys[t]) * s.nkv + g) * s.d];
          for (int64_t c = 0; c < s.d; ++c) oi[c] += p * vj[c];
        }
        lse[(b * s.nh + h) * s.Sq + i] = max + std::log(sum);
      }
    }
  }
}

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs random_inputs(const Shape& s, uint32_t seed) {
  return {random_floats(s.B * s.Sq * s.nh * s.d, seed, -1.5f, 1.5f),
          random_floats(s.B * s.Skv * s.nkv * s.d, seed + 1, -1.5f, 1.5f),
          random_floats(s.B * s.Skv * s.nkv * s.d, seed + 2)};
}

// The ops on host vectors: q, o (B,Sq,nh,d); k, v (B,Skv,nkv,d); lse (B,nh,Sq).
ops::AttentionShape shape_of(const Shape& s) { return {s.B, s.Sq, s.Skv, s.nh, s.nkv, s.d}; }
Tensor queries(const Shape& s, const std::vector<float>& x) {
  return Tensor::from_vector({s.B, s.Sq, s.nh, s.d}, x);
}
Tensor keys(const Shape& s, const std::vector<float>& x) {
  return Tensor::from_vector({s.B, s.Skv, s.nkv, s.d}, x);
}
Tensor row_stats(const Shape& s, const std::vector<float>& x) {
  return Tensor::from_vector({s.B, s.nh, s.Sq}, x);
}

void run_forward(const Shape& s, const Inputs& in, const std::vector<int32_t>& q_pos,
                 const std::vector<int32_t>& k_pos, std::vector<float>& o,
                 std::vector<float>& lse) {
  const Tensor o_t = Tensor::zeros({s.B, s.Sq, s.nh, s.d});
  const Tensor lse_t = Tensor::zeros({s.B, s.nh, s.Sq});
  ops::attention_forward(queries(s, in.q), keys(s, in.k), keys(s, in.v), o_t, lse_t, q_pos, k_pos,
                         shape_of(s));
  o = o_t.to_vector();
  lse = lse_t.to_vector();
}

// (o_a, lse_a) becomes the merge of the two partial results.
void merge(const Shape& s, std::vector<float>& o_a, std::vector<float>& lse_a,
           const std::vector<float>& o_b, const std::vector<float>& lse_b) {
  const Tensor o = queries(s, o_a), lse = row_stats(s, lse_a);
  ops::attention_merge(o, lse, queries(s, o_b), row_stats(s, lse_b), shape_of(s));
  o_a = o.to_vector();
  lse_a = lse.to_vector();
}

// dq, dk, dv accumulate.
void run_backward(const Shape& s, const std::vector<float>& dout, const Inputs& in,
                  const std::vector<float>& o, const std::vector<float>& lse,
                  std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv,
                  const std::vector<int32_t>& q_pos, const std::vector<int32_t>& k_pos) {
  const Tensor dq_t = queries(s, dq), dk_t = keys(s, dk), dv_t = keys(s, dv);
  ops::attention_backward(queries(s, dout), queries(s, in.q), keys(s, in.k), keys(s, in.v),
                          queries(s, o), row_stats(s, lse), dq_t, dk_t, dv_t, q_pos, k_pos,
                          shape_of(s));
  dq = dq_t.to_vector();
  dk = dk_t.to_vector();
  dv = dv_t.to_vector();
}

void expect_forward_matches_reference(const Shape& s, const std::vector<int32_t>& q_pos,
                                      const std::vector<int32_t>& k_pos, uint32_t seed) {
  const Inputs in = random_inputs(s, seed);
  std::vector<float> o, lse;
  run_forward(s, in, q_pos, k_pos, o, lse);
  std::vector<double> ref_o, ref_lse;
  reference_attention(s, in.q, in.k, in.v, q_pos, k_pos, ref_o, ref_lse);
  moefold::testing::expect_close(o, ref_o, 2e-6, 1e-5, "o");
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << "lse " << i;
    } else {
      EXPECT_NEAR(lse[i], ref_lse[i], 1e-5 + 1e-5 * std::abs(ref_lse[i])) << "lse " << i;
    }
  }
}

TEST(Attention, CausalGqaForwardMatchesReferenceAcrossBlockBoundaries) {
  const Shape s{2, 150, 150, 4, 2, 8};
  expect_forward_matches_reference(s, iota_positions(150, 0), iota_positions(150, 0), 1);
}

TEST(Attention, ForwardGroupOfThreeAndSingleKvHead) {
  expect_forward_matches_reference({1, 67, 67, 6, 2, 5}, iota_positions(67, 0),
                                   iota_positions(67, 0), 2);
  expect_forward_matches_reference({1, 40, 40, 3, 1, 16}, iota_positions(40, 0),
                                   iota_positions(40, 0), 3);
}

TEST(Attention, CustomPositionsIncludingFullyMaskedRows) {
  // Queries are a later chunk than part of the keys; the first queries see no key at all.
  const Shape s{1, 70, 200, 2, 1, 4};
  std::vector<int32_t> q_pos = iota_positions(70, 0);
  for (auto& p : q_pos) p = p * 3;  // 0, 3, ..., 207: non-contiguous
  expect_forward_matches_reference(s, q_pos, iota_positions(200, 5), 4);

  const Inputs in = random_inputs(s, 4);
  std::vector<float> o, lse;
  run_forward(s, in, q_pos, iota_positions(200, 5), o, lse);
  for (int64_t h = 0; h < s.nh; ++h) {  // query 0 (position 0) and 1 (position 3) see nothing
    for (int64_t i : {0, 1}) {
      EXPECT_EQ(lse[h * s.Sq + i], -std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < s.d; ++c) EXPECT_EQ(o[(i * s.nh + h) * s.d + c], 0.0f);
    }
  }
}

TEST(Attention, NoKeysGivesZeroOutputAndMinusInfinityLse) {
  const Shape s{1, 3, 0, 2, 1, 4};
  const Inputs in = random_inputs(s, 12);
  std::vector<float> o, lse;
  run_forward(s, in, iota_positions(3, 0), {}, o, lse);
  for (float x : o) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
}

// Splits the keys of `s` into [0, split) and [split, Skv).
struct KeySplit {
  Shape shape_a, shape_b;
  Inputs a, b;
  std::vector<int32_t> pos_a, pos_b;
};

KeySplit split_keys(const Shape& s, const Inputs& in, const std::vector<int32_t>& k_pos,
                    int64_t split) {
  KeySplit out;
  out.shape_a = {s.B, s.Sq, split, s.nh, s.nkv, s.d};
  out.shape_b = {s.B, s.Sq, s.Skv - split, s.nh, s.nkv, s.d};
  const int64_t row = s.nkv * s.d;
  for (int64_t b = 0; b < s.B; ++b) {
    const auto k_begin = in.k.begin() + b * s.Skv * row, v_begin = in.v.begin() + b * s.Skv * row;
    out.a.k.insert(out.a.k.end(), k_begin, k_begin + split * row);
    out.a.v.insert(out.a.v.end(), v_begin, v_begin + split * row);
    out.b.k.insert(out.b.k.end(), k_begin + split * row, k_begin + s.Skv * row);
    out.b.v.insert(out.b.v.end(), v_begin + split * row, v_begin + s.Skv * row);
  }
  out.a.q = out.b.q = in.q;
  out.pos_a.assign(k_pos.begin(), k_pos.begin() + split);
  out.pos_b.assign(k_pos.begin() + split, k_pos.end());
  return out;
}

TEST(Attention, MergeOfTwoKeyHalvesEqualsFullAttention) {
  const Shape s{2, 90, 90, 4, 2, 8};
  const auto pos = iota_positions(90, 0);
  const Inputs in = random_inputs(s, 5);
  std::vector<float> o_full, lse_full;
  run_forward(s, in, pos, pos, o_full, lse_full);

  const KeySplit parts = split_keys(s, in, pos, 45);  // queries < 45 see nothing of half b
  std::vector<float> o_a, lse_a, o_b, lse_b;
  run_forward(parts.shape_a, parts.a, pos, parts.pos_a, o_a, lse_a);
  run_forward(parts.shape_b, parts.b, pos, parts.pos_b, o_b, lse_b);
  merge(s, o_a, lse_a, o_b, lse_b);
  moefold::testing::expect_close(o_a, o_full, 1e-5, 1e-5, "merged o");
  moefold::testing::expect_close(lse_a, lse_full, 1e-5, 1e-5, "merged lse");

  // Merging in the other order (a fully masked partial first) gives the same.
  run_forward(parts.shape_a, parts.a, pos, parts.pos_a, o_a, lse_a);
  merge(s, o_b, lse_b, o_a, lse_a);
  moefold::testing::expect_close(o_b, o_full, 1e-5, 1e-5, "merged o (b first)");
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  // Crosses both tile sizes (64 queries, 128 keys); GQA with 2 query heads per kv head.
  const Shape s{1, 130, 130, 2, 1, 4};
  const auto pos = iota_positions(130, 0);
  Inputs in = random_inputs(s, 6);
  const auto dout = random_floats(s.B * s.Sq * s.nh * s.d, 9);
  std::vector<float> o, lse;
  run_forward(s, in, pos, pos, o, lse);
  std::vector<float> dq(in.q.size(), 0.0f), dk(in.k.size(), 0.0f), dv(in.v.size(), 0.0f);
  run_backward(s, dout, in, o, lse, dq, dk, dv, pos, pos);
  auto loss = [&] {
    std::vector<float> o2, lse2;
    run_forward(s, in, pos, pos, o2, lse2);
    return moefold::testing::weighted_sum(dout, o2);
  };
  moefold::testing::expect_gradient_matches(in.q, dq, loss, 1e-2f, 2e-3, 5e-3, "dq");
  moefold::testing::expect_gradient_matches(in.k, dk, loss, 1e-2f, 2e-3, 5e-3, "dk");
  moefold::testing::expect_gradient_matches(in.v, dv, loss, 1e-2f, 2e-3, 5e-3, "dv");
}

TEST(Attention, BackwardOverKeyBlocksSumsToFullBackward) {
  // What ring attention does: backward per key block with the merged o and lse; dq accumulates.
  const Shape s{2, 70, 70, 4, 2, 6};
  std::vector<int32_t> pos = iota_positions(70, 10);
  const Inputs in = random_inputs(s, 7);
  const auto dout = random_floats(s.B * s.Sq * s.nh * s.d, 8);
  std::vector<float> o, lse;
  run_forward(s, in, pos, pos, o, lse);
  std::vector<float> dq(in.q.size(), 0.5f), dk(in.k.size(), 0.0f), dv(in.v.size(), 0.0f);
  run_backward(s, dout, in, o, lse, dq, dk, dv, pos, pos);

  const KeySplit parts = split_keys(s, in, pos, 33);
  std::vector<float> dq_sum(in.q.size(), 0.5f);
  std::vector<float> dk_a(parts.a.k.size(), 0.0f), dv_a(parts.a.v.size(), 0.0f);
  std::vector<float> dk_b(parts.b.k.size(), 0.0f), dv_b(parts.b.v.size(), 0.0f);
  run_backward(parts.shape_a, dout, parts.a, o, lse, dq_sum, dk_a, dv_a, pos, parts.pos_a);
  run_backward(parts.shape_b, dout, parts.b, o, lse, dq_sum, dk_b, dv_b, pos, parts.pos_b);
  moefold::testing::expect_close(dq_sum, moefold::testing::to_double(dq), 1e-5, 1e-4, "dq");
  const KeySplit grads = split_keys(s, {in.q, dk, dv}, pos, 33);
  moefold::testing::expect_close(dk_a, moefold::testing::to_double(grads.a.k), 1e-5, 1e-4, "dk a");
  moefold::testing::expect_close(dv_a, moefold::testing::to_double(grads.a.v), 1e-5, 1e-4, "dv a");
  moefold::testing::expect_close(dk_b, moefold::testing::to_double(grads.b.k), 1e-5, 1e-4, "dk b");
  moefold::testing::expect_close(dv_b, moefold::testing::to_double(grads.b.v), 1e-5, 1e-4, "dv b");
}

}  // namespace
}  // namespace moefold
