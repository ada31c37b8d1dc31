// The flash attention's tile schedule (tensor/attention_plan.h flash_key_tiles) and running
// softmax (row_math.h online_softmax_step), executed on the CPU as tensor/cuda/flash_attention.cu
// runs them: query tiles fold their key tiles in order, the backward's key tiles visit the query
// tiles that see them, P and dS round to bf16 before their GEMMs, dQ and dK carry the score
// scale. The results must match the CPU attention at bf16 tolerance, which checks the tiling,
// the skipped tile pairs, partial tiles and the rescaling that the GPU will run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/attention_plan.h"
#include "tensor/kernel_math.h"
#include "tensor/row_math.h"
#include "tests/tensor/attention_reference.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::bf16_values;
using testing::AttentionResults;
using testing::round_bf16;

struct Case {
  AttentionDims dims;
  std::vector<int32_t> q_pos, k_pos;
  int64_t tile;
};

// Row-major views of q/o/dout (B,Sq,nh,d) and k/v (B,Skv,nkv,d).
struct Layout {
  const AttentionDims& m;
  int64_t q(int64_t b, int64_t i, int64_t h) const { return ((b * m.Sq + i) * m.nh + h) * m.d; }
  int64_t kv(int64_t b, int64_t j, int64_t g) const {
    return ((b * m.Skv + j) * m.nkv + g) * m.d;
  }
  int64_t row(int64_t b, int64_t h, int64_t i) const { return (b * m.nh + h) * m.Sq + i; }
};

float dot(const float* a, const float* b, int64_t n) {
  double sum = 0.0;
  for (int64_t x = 0; x < n; ++x) sum += double(a[x]) * b[x];
  return static_cast<float>(sum);
}


AttentionResults run_flash(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, const std::vector<float>& dout) {
  const AttentionDims& m = c.dims;
  const Layout at{m};
  const int64_t T = c.tile, group = m.nh / m.nkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(m.d));
  const std::vector<int32_t> key_tiles =
      flash_key_tiles(c.q_pos.data(), m.Sq, c.k_pos.data(), m.Skv, T);
  AttentionResults r;
  r.o.assign(q.size(), NAN);
  r.lse.assign(m.B * m.nh * m.Sq, NAN);
  for (int64_t b = 0; b < m.B; ++b) {
    for (int64_t h = 0; h < m.nh; ++h) {
      for (int64_t i = 0; i < m.Sq; ++i) {
        float running_max = -INFINITY, sum = 0.0f;
        std::vector<float> acc(m.d, 0.0f);
        for (int64_t u = 0; u < key_tiles[i / T]; ++u) {
          std::vector<float> s;
          float tile_max = -INFINITY;
          for (int64_t j = u * T; j < std::min((u + 1) * T, m.Skv); ++j) {
            const bool visible = key_visible(c.q_pos[i], c.k_pos[j]);
            s.push_back(visible ? scale * dot(&q[at.q(b, i, h)], &k[at.kv(b, j, h / group)], m.d)
                                : -INFINITY);
            tile_max = std::max(tile_max, s.back());
          }
          const OnlineSoftmaxStep step = online_softmax_step(running_max, tile_max);
          running_max = step.max;
          sum *= step.rescale;
          for (float& a : acc) a *= step.rescale;
          for (size_t x = 0; x < s.size(); ++x) {
            const float p = attention_probability(s[x], running_max, s[x] != -INFINITY);
            sum += p;
            const float* vj = &v[at.kv(b, u * T + static_cast<int64_t>(x), h / group)];
            for (int64_t y = 0; y < m.d; ++y) acc[y] += round_bf16(p) * vj[y];
          }
        }
        for (int64_t y = 0; y < m.d; ++y) {
          r.o[at.q(b, i, h) + y] = round_bf16(sum > 0.0f ? acc[y] / sum : 0.0f);
        }
        r.lse[at.row(b, h, i)] = attention_lse(running_max, sum);
      }
    }
  }
  // Backward: each key tile u of each kv head visits the query tiles that see it.
  r.dq.assign(q.size(), 0.0f);
  r.dk.assign(k.size(), 0.0f);
  r.dv.assign(v.size(), 0.0f);
  for (int64_t b = 0; b < m.B; ++b) {
    for (int64_t g = 0; g < m.nkv; ++g) {
      for (int64_t u = 0; u * T < m.Skv; ++u) {
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          for (int64_t t = 0; t < static_cast<int64_t>(key_tiles.size()); ++t) {
            if (key_tiles[t] <= u) continue;
            for (int64_t i = t * T; i < std::min((t + 1) * T, m.Sq); ++i) {
              const float* qi = &q[at.q(b, i, h)];
              const float* doi = &dout[at.q(b, i, h)];
              const float lse = r.lse[at.row(b, h, i)];
              const float delta = dot(doi, &r.o[at.q(b, i, h)], m.d);
              for (int64_t j = u * T; j < std::min((u + 1) * T, m.Skv); ++j) {
                const float* kj = &k[at.kv(b, j, g)];
                const float* vj = &v[at.kv(b, j, g)];
                const float p = attention_probability(scale * dot(qi, kj, m.d), lse,
                                                      key_visible(c.q_pos[i], c.k_pos[j]));
                const float ds = round_bf16(softmax_gradient(dot(doi, vj, m.d), p, delta));
                for (int64_t y = 0; y < m.d; ++y) {
                  r.dv[at.kv(b, j, g) + y] += round_bf16(p) * doi[y];
                  r.dk[at.kv(b, j, g) + y] += scale * ds * qi[y];
                  r.dq[at.q(b, i, h) + y] += scale * ds * kj[y];
                }
              }
            }
          }
        }
      }
    }
  }
  return r;
}

void expect_flash_matches_cpu_attention(const Case& c) {
  const AttentionDims& m = c.dims;
  const int64_t q_size = m.B * m.Sq * m.nh * m.d, kv_size = m.B * m.Skv * m.nkv * m.d;
  const auto q = bf16_values(q_size, 1), k = bf16_values(kv_size, 2);
  const auto v = bf16_values(kv_size, 3), dout = bf16_values(q_size, 4);
  testing::expect_matches_cpu_attention(run_flash(c, q, k, v, dout), m, q, k, v, dout, c.q_pos,
                                        c.k_pos);
}

std::vector<int32_t> iota(int64_t n, int32_t first) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = first + static_cast<int32_t>(i);
  return p;
}

TEST(FlashSchedule, CausalGqaOverPartialTilesMatchesTheCpuAttention) {
  expect_flash_matches_cpu_attention({{2, 11, 11, 4, 2, 8}, iota(11, 0), iota(11, 0), 4});
}

TEST(FlashSchedule, RingStepsAndPositionsInAnyOrderMatchTheCpuAttention) {
  // A ring step whose keys come after the first query tile (that tile sees nothing), and one
  // with keys out of order and a query (position −1) that sees no key.
  expect_flash_matches_cpu_attention({{1, 9, 7, 2, 1, 4}, iota(9, 0), iota(7, 4), 3});
  expect_flash_matches_cpu_attention(
      {{1, 5, 6, 2, 1, 4}, {4, -1, 0, 2, 5}, {0, 1, 5, 2, 3, 4}, 2});
}

TEST(FlashSchedule, QueryTilesFoldOnlyTheKeyTilesTheySee) {
  const std::vector<int32_t> pos = iota(130, 0);
  EXPECT_EQ(flash_key_tiles(pos.data(), 130, pos.data(), 130, kFlashTile),
            (std::vector<int32_t>{1, 2, 3}));
  const std::vector<int32_t> later = iota(100, 64);  // a ring step's keys, from position 64 on
  EXPECT_EQ(flash_key_tiles(pos.data(), 130, later.data(), 100, kFlashTile),
            (std::vector<int32_t>{0, 1, 2}));
  EXPECT_TRUE(flash_key_tiles(pos.data(), 0, pos.data(), 130, kFlashTile).empty());
}

}  // namespace
}  // namespace moefold
