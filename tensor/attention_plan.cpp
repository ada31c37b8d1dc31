#include "tensor/attention_plan.h"

#include <algorithm>
#include <cmath>

#include "tensor/check.h"
#include "tensor/row_math.h"

namespace moefold {
namespace {

using Buffer = AttentionBuffer;

// One chunk: b, head h (kv head kvh), query rows [i0, i0 + rows), keys [0, keys).
struct Chunk {
  int64_t q_at, kv_at, lse_at, i0, rows, keys;
};

AttentionStep gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   Buffer a, int64_t a_at, int64_t lda, Buffer b, int64_t b_at, int64_t ldb,
                   float beta, Buffer c, int64_t c_at, int64_t ldc, const Chunk& k) {
  return {true,
          {trans_a, trans_b, M, N, K, alpha, a, a_at, lda, b, b_at, ldb, beta, c, c_at, ldc},
          AttentionRowOp::kSoftmax, k.rows, k.keys, k.i0, k.lse_at};
}

AttentionStep row(AttentionRowOp op, const Chunk& k) {
  return {false, {}, op, k.rows, k.keys, k.i0, k.lse_at};
}

// S (rows, keys) = scale·Q Kᵀ, the first GEMM of both directions.
AttentionStep scores(const Chunk& k, const AttentionDims& dims, int64_t q_ld, int64_t kv_ld) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dims.d));
  return gemm(false, true, k.rows, k.keys, dims.d, scale, Buffer::kQ, k.q_at, q_ld, Buffer::kK,
              k.kv_at, kv_ld, 0.0f, Buffer::kScores, 0, k.keys, k);
}

// Every (b, h, chunk) in order, with its visible key prefix; `skip_empty` drops chunks that see
// no key (the backward, where they contribute nothing).
template <class Emit>
void for_each_chunk(const AttentionDims& dims, const int32_t* q_pos, const int32_t* k_pos,
                    int64_t chunk_rows, bool skip_empty, Emit emit) {
  MOEFOLD_CHECK(dims.nkv > 0 && dims.nh % dims.nkv == 0,
                "heads " << dims.nh << " not divisible by kv heads " << dims.nkv);
  MOEFOLD_CHECK(dims.d > 0 && chunk_rows > 0, "attention head dim " << dims.d);
  const int64_t q_ld = dims.nh * dims.d, kv_ld = dims.nkv * dims.d;
  for (int64_t b = 0; b < dims.B; ++b) {
    for (int64_t h = 0; h < dims.nh; ++h) {
      const int64_t kvh = h / (dims.nh / dims.nkv);
      for (int64_t i0 = 0; i0 < dims.Sq; i0 += chunk_rows) {
        const int64_t rows = std::min(chunk_rows, dims.Sq - i0);
        const int64_t keys = attention_visible_prefix(q_pos + i0, rows, k_pos, dims.Skv);
        if (skip_empty && keys == 0) continue;
        emit(Chunk{(b * dims.Sq + i0) * q_ld + h * dims.d, b * dims.Skv * kv_ld + kvh * dims.d,
                   (b * dims.nh + h) * dims.Sq + i0, i0, rows, keys},
             q_ld, kv_ld);
      }
    }
  }
}

}  // namespace

int64_t attention_chunk_rows(const AttentionDims& dims, int64_t bytes_per_score,
                             int64_t max_bytes, int64_t max_rows) {
  const int64_t rows = max_bytes / std::max<int64_t>(dims.Skv * bytes_per_score, 1);
  return std::clamp<int64_t>(rows, 1, std::clamp<int64_t>(dims.Sq, 1, max_rows));
}

std::vector<AttentionStep> plan_attention_forward(const AttentionDims& dims,
                                                  const int32_t* q_pos, const int32_t* k_pos,
                                                  int64_t chunk_rows) {
  const int64_t d = dims.d;
  std::vector<AttentionStep> plan;
  for_each_chunk(dims, q_pos, k_pos, chunk_rows, false,
                 [&](const Chunk& k, int64_t q_ld, int64_t kv_ld) {
    const int64_t c = k.rows, L = k.keys;
    plan.push_back(scores(k, dims, q_ld, kv_ld));
    plan.push_back(row(AttentionRowOp::kSoftmax, k));
    plan.push_back(gemm(false, false, c, d, L, 1.0f, Buffer::kProbs, 0, L, Buffer::kV, k.kv_at,
                        kv_ld, 0.0f, Buffer::kO, k.q_at, q_ld, k));
  });
  return plan;
}

std::vector<AttentionStep> plan_attention_backward(const AttentionDims& dims,
                                                   const int32_t* q_pos, const int32_t* k_pos,
                                                   int64_t chunk_rows) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dims.d));
  const int64_t d = dims.d;
  std::vector<AttentionStep> plan;
  for_each_chunk(dims, q_pos, k_pos, chunk_rows, true,
                 [&](const Chunk& k, int64_t q_ld, int64_t kv_ld) {
    const int64_t c = k.rows, L = k.keys;
    plan.push_back(scores(k, dims, q_ld, kv_ld));
    plan.push_back(row(AttentionRowOp::kProbabilities, k));
    plan.push_back(gemm(false, true, c, L, d, 1.0f, Buffer::kDout, k.q_at, q_ld, Buffer::kV,
                        k.kv_at, kv_ld, 0.0f, Buffer::kDp, 0, L, k));
    plan.push_back(gemm(true, false, L, d, c, 1.0f, Buffer::kProbs, 0, L, Buffer::kDout, k.q_at,
                        q_ld, 1.0f, Buffer::kDv, k.kv_at, kv_ld, k));
    plan.push_back(row(AttentionRowOp::kScoreGradients, k));
    plan.push_back(gemm(false, false, c, d, L, scale, Buffer::kProbs, 0, L, Buffer::kK, k.kv_at,
                        kv_ld, 1.0f, Buffer::kDq, k.q_at, q_ld, k));
    plan.push_back(gemm(true, false, L, d, c, scale, Buffer::kProbs, 0, L, Buffer::kQ, k.q_at,
                        q_ld, 1.0f, Buffer::kDk, k.kv_at, kv_ld, k));
  });
  return plan;
}

std::vector<int32_t> flash_key_tiles(const int32_t* q_pos, int64_t Sq, const int32_t* k_pos,
                                     int64_t Skv, int64_t tile) {
  MOEFOLD_CHECK(tile > 0, "flash attention tile " << tile);
  std::vector<int32_t> key_tiles;
  for (int64_t i0 = 0; i0 < Sq; i0 += tile) {
    const int64_t rows = std::min(tile, Sq - i0);
    const int64_t keys = attention_visible_prefix(q_pos + i0, rows, k_pos, Skv);
    key_tiles.push_back(static_cast<int32_t>((keys + tile - 1) / tile));
  }
  return key_tiles;
}

}  // namespace moefold
