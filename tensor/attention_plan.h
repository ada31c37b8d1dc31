// The bf16 CUDA attention as data (STYLE.md 8, "schedules are data"): per sequence, query head
// and chunk of query rows, the cuBLAS GEMMs and row kernels it runs, each GEMM operand given as
// an element offset and leading dimension into one of the attention's buffers. The CUDA backend
// executes the plan (tensor/cuda/attention_bf16.cu); the CPU tests execute the same plan with a
// reference GEMM and row_math.h's formulas and compare it with the CPU attention, so the
// chunking, strides, GQA head mapping and causal key prefixes are checked without a GPU.
//   forward   S = scale·Q Kᵀ, P = softmax of the visible scores (lse out), O = P V;
//   backward  S again, P from lse, dP = dO Vᵀ, dV += Pᵀ dO, dS = P ⊙ (dP − delta),
//             dQ += scale·dS K, dK += scale·dSᵀ Q   (delta = rowsum(dO ⊙ O), computed before).
// A chunk scores only the keys up to the last one it can see (attention_visible_prefix).
#pragma once

#include <cstdint>
#include <vector>

namespace moefold {

struct AttentionDims {
  int64_t B, Sq, Skv, nh, nkv, d;  // q, o (B,Sq,nh,d); k, v (B,Skv,nkv,d); lse (B,nh,Sq)
};

// The buffers a plan reads and writes. Scores, Probs (P, then dS) and Dp are one chunk's
// (rows, keys) scratch, row-major with leading dimension keys.
enum class AttentionBuffer { kQ, kK, kV, kO, kDout, kDq, kDk, kDv, kScores, kProbs, kDp };
constexpr int kAttentionBuffers = 11;

// C (M,N) = alpha·op(A)·op(B) + beta·C, row-major, each matrix at an element offset of a buffer.
struct AttentionGemm {
  bool trans_a, trans_b;
  int64_t M, N, K;
  float alpha;
  AttentionBuffer a;
  int64_t a_at, lda;
  AttentionBuffer b;
  int64_t b_at, ldb;
  float beta;
  AttentionBuffer c;
  int64_t c_at, ldc;
};

// The row kernels between the GEMMs, one query row of `keys` scores each:
//   kSoftmax          Scores → lse (written) and P (row_math.h attention_lse/probability);
//   kProbabilities    Scores and lse → P;
//   kScoreGradients   Scores, lse, Dp and delta → dS (softmax_gradient), into Probs.
enum class AttentionRowOp { kSoftmax, kProbabilities, kScoreGradients };

struct AttentionStep {
  bool is_gemm;
  AttentionGemm gemm;       // when is_gemm
  AttentionRowOp row_op;    // otherwise, on:
  int64_t rows, keys;       // the chunk's query rows and scored keys
  int64_t first_query;      // its first row's index into q_pos
  int64_t lse_at;           // its first row's index into lse and delta (B,nh,Sq)
};

// Query rows per chunk: at most max_rows, and scratch of bytes_per_score per (row, key) within
// max_bytes.
int64_t attention_chunk_rows(const AttentionDims& dims, int64_t bytes_per_score,
                             int64_t max_bytes, int64_t max_rows);

std::vector<AttentionStep> plan_attention_forward(const AttentionDims& dims,
                                                  const int32_t* q_pos, const int32_t* k_pos,
                                                  int64_t chunk_rows);
// dQ, dK and dV accumulate (beta 1).
std::vector<AttentionStep> plan_attention_backward(const AttentionDims& dims,
                                                   const int32_t* q_pos, const int32_t* k_pos,
                                                   int64_t chunk_rows);

// Flash attention (tensor/cuda/flash_attention.cu) works on tiles of `tile` query rows and
// `tile` keys. Query tile t folds key tiles [0, key_tiles[t]) in order into a running softmax
// (row_math.h online_softmax_step): those up to its visible prefix (attention_visible_prefix),
// keys beyond it hidden from every row of the tile. The backward's key tile u visits the query
// tiles t with key_tiles[t] > u, so both directions skip the same tile pairs.
constexpr int64_t kFlashTile = 64;
std::vector<int32_t> flash_key_tiles(const int32_t* q_pos, int64_t Sq, const int32_t* k_pos,
                                     int64_t Skv, int64_t tile);

}  // namespace moefold
