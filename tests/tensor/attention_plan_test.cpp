// The bf16 CUDA attention's plan (tensor/attention_plan.h), executed on the CPU: a reference
// GEMM in double for each planned GEMM (bounds-checked against its buffer, rounding the outputs
// the device stores as bf16), and row_math.h's formulas for each row step, as the CUDA kernels
// apply them. The results must match the CPU attention at bf16 tolerance, which checks the
// chunking, strides, GQA head mapping and causal key prefixes that the GPU will run.
#include "tensor/attention_plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/kernel_math.h"
#include "tensor/ops.h"
#include "tensor/row_math.h"
#include "tests/tensor/attention_reference.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::bf16_values;
using testing::round_bf16;

// The device's buffers on the host, and which of them store bf16.
struct HostBuffers {
  std::vector<float> data[kAttentionBuffers];
  bool bf16[kAttentionBuffers] = {};
  std::vector<float>& operator[](AttentionBuffer b) { return data[static_cast<int>(b)]; }
};

void run_gemm(const AttentionGemm& g, HostBuffers& buffers) {
  const auto& A = buffers[g.a];
  const auto& B = buffers[g.b];
  auto& C = buffers[g.c];
  const int64_t a_rows = g.trans_a ? g.K : g.M, a_cols = g.trans_a ? g.M : g.K;
  const int64_t b_rows = g.trans_b ? g.N : g.K, b_cols = g.trans_b ? g.K : g.N;
  if (g.M == 0 || g.N == 0) return;
  if (g.K > 0) {
    ASSERT_LE(g.a_at + (a_rows - 1) * g.lda + a_cols, static_cast<int64_t>(A.size()));
    ASSERT_LE(g.b_at + (b_rows - 1) * g.ldb + b_cols, static_cast<int64_t>(B.size()));
  }
  ASSERT_LE(g.c_at + (g.M - 1) * g.ldc + g.N, static_cast<int64_t>(C.size()));
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.N; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < g.K; ++k) {
        const float a = g.trans_a ? A[g.a_at + k * g.lda + i] : A[g.a_at + i * g.lda + k];
        const float b = g.trans_b ? B[g.b_at + j * g.ldb + k] : B[g.b_at + k * g.ldb + j];
        acc += static_cast<double>(a) * b;
      }
      float& c = C[g.c_at + i * g.ldc + j];
      const float value = static_cast<float>(g.alpha * acc + (g.beta != 0.0f ? g.beta * c : 0.0));
      c = buffers.bf16[static_cast<int>(g.c)] ? round_bf16(value) : value;
    }
  }
}

void run_row_step(const AttentionStep& s, HostBuffers& buffers, const int32_t* q_pos,
                  const int32_t* k_pos, std::vector<float>& lse, const std::vector<float>& delta) {
  const auto& scores = buffers[AttentionBuffer::kScores];
  const auto& dp = buffers[AttentionBuffer::kDp];
  auto& probs = buffers[AttentionBuffer::kProbs];
  for (int64_t r = 0; r < s.rows; ++r) {
    const int32_t position = q_pos[s.first_query + r];
    const float* row = scores.data() + r * s.keys;
    if (s.row_op == AttentionRowOp::kSoftmax) {
      float row_max = -INFINITY, sum = 0.0f;
      for (int64_t j = 0; j < s.keys; ++j) {
        if (key_visible(position, k_pos[j])) row_max = std::max(row_max, row[j]);
      }
      for (int64_t j = 0; j < s.keys; ++j) {
        if (key_visible(position, k_pos[j]) && row_max != -INFINITY) sum += expf(row[j] - row_max);
      }
      lse[s.lse_at + r] = attention_lse(row_max, sum);
    }
    const float row_lse = lse[s.lse_at + r];
    for (int64_t j = 0; j < s.keys; ++j) {
      const float p = attention_probability(row[j], row_lse, key_visible(position, k_pos[j]));
      const float value = s.row_op == AttentionRowOp::kScoreGradients
                              ? softmax_gradient(dp[r * s.keys + j], p, delta[s.lse_at + r])
                              : p;
      probs[r * s.keys + j] = round_bf16(value);
    }
  }
}

void run_plan(const std::vector<AttentionStep>& plan, HostBuffers& buffers, const int32_t* q_pos,
              const int32_t* k_pos, std::vector<float>& lse, const std::vector<float>& delta) {
  for (const AttentionStep& s : plan) {
    if (s.is_gemm) {
      run_gemm(s.gemm, buffers);
    } else {
      run_row_step(s, buffers, q_pos, k_pos, lse, delta);
    }
  }
}

struct Case {
  AttentionDims dims;
  std::vector<int32_t> q_pos, k_pos;
  int64_t chunk_rows;
};

void expect_plan_matches_cpu_attention(const Case& c) {
  const AttentionDims& m = c.dims;
  const int64_t q_size = m.B * m.Sq * m.nh * m.d, kv_size = m.B * m.Skv * m.nkv * m.d;
  const auto q = bf16_values(q_size, 1), k = bf16_values(kv_size, 2);
  const auto v = bf16_values(kv_size, 3), dout = bf16_values(q_size, 4);

  HostBuffers buffers;
  buffers[AttentionBuffer::kQ] = q;
  buffers[AttentionBuffer::kK] = k;
  buffers[AttentionBuffer::kV] = v;
  buffers[AttentionBuffer::kDout] = dout;
  buffers[AttentionBuffer::kO].assign(q_size, NAN);
  for (AttentionBuffer b : {AttentionBuffer::kDq}) buffers[b].assign(q_size, 0.0f);
  for (AttentionBuffer b : {AttentionBuffer::kDk, AttentionBuffer::kDv}) {
    buffers[b].assign(kv_size, 0.0f);
  }
  for (AttentionBuffer b : {AttentionBuffer::kScores, AttentionBuffer::kProbs,
                            AttentionBuffer::kDp}) {
    buffers[b].assign(c.chunk_rows * m.Skv, NAN);
  }
  buffers.bf16[static_cast<int>(AttentionBuffer::kO)] = true;
  buffers.bf16[static_cast<int>(AttentionBuffer::kProbs)] = true;
  std::vector<float> lse(m.B * m.nh * m.Sq, NAN), delta(lse.size());
  run_plan(plan_attention_forward(m, c.q_pos.data(), c.k_pos.data(), c.chunk_rows), buffers,
           c.q_pos.data(), c.k_pos.data(), lse, delta);
  const std::vector<float>& o = buffers[AttentionBuffer::kO];
  // The backward from the plan's own (bf16) o, as the device would run it.
  for (int64_t row = 0; row < m.B * m.Sq * m.nh; ++row) {
    const int64_t h = row % m.nh, i = (row / m.nh) % m.Sq, b = row / (m.nh * m.Sq);
    double sum = 0.0;
    for (int64_t x = 0; x < m.d; ++x) sum += double(dout[row * m.d + x]) * o[row * m.d + x];
    delta[(b * m.nh + h) * m.Sq + i] = static_cast<float>(sum);
  }
  run_plan(plan_attention_backward(m, c.q_pos.data(), c.k_pos.data(), c.chunk_rows), buffers,
           c.q_pos.data(), c.k_pos.data(), lse, delta);
  testing::expect_matches_cpu_attention(
      {o, lse, buffers[AttentionBuffer::kDq], buffers[AttentionBuffer::kDk],
       buffers[AttentionBuffer::kDv]},
      m, q, k, v, dout, c.q_pos, c.k_pos);
}

TEST(AttentionPlan, CausalGqaInChunksMatchesTheCpuAttention) {
  Case c{{2, 7, 7, 4, 2, 8}, {0, 1, 2, 3, 4, 5, 6}, {0, 1, 2, 3, 4, 5, 6}, 3};
  expect_plan_matches_cpu_attention(c);
}

TEST(AttentionPlan, PositionsInAnyOrderAndAQueryWithNoKeyMatchTheCpuAttention) {
  // Ring attention's shapes: a kv block that is not the queries', keys out of order, and a
  // query (position −1) that sees no key.
  Case c{{1, 5, 6, 2, 1, 4}, {4, -1, 0, 2, 5}, {0, 1, 5, 2, 3, 4}, 2};
  expect_plan_matches_cpu_attention(c);
}

TEST(AttentionPlan, CausalChunksScoreOnlyTheKeysTheySee) {
  const AttentionDims dims{1, 8, 8, 1, 1, 4};
  const std::vector<int32_t> pos = {0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<int64_t> keys;
  for (const AttentionStep& s : plan_attention_forward(dims, pos.data(), pos.data(), 2)) {
    if (!s.is_gemm && s.row_op == AttentionRowOp::kSoftmax) keys.push_back(s.keys);
  }
  EXPECT_EQ(keys, (std::vector<int64_t>{2, 4, 6, 8}));
  EXPECT_EQ(attention_chunk_rows(dims, 10, 1 << 20, 512), 8) << "at most Sq rows";
  EXPECT_EQ(attention_chunk_rows({1, 4096, 4096, 1, 1, 4}, 10, 256 << 20, 512), 512);
  EXPECT_EQ(attention_chunk_rows({1, 4096, 1 << 20, 1, 1, 4}, 10, 256 << 20, 512), 25);
}

}  // namespace
}  // namespace moefold
