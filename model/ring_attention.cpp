#include "model/ring_attention.h"

#include <chrono>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "model/context_shard.h"
#include "model/scratch.h"
#include "parallel/cp_communication.h"
#include "tensor/check.h"
#include "tensor/cpu/attention.h"

namespace moefold {
namespace {

struct RingBuffers {
  Tensor kv[2];     // (2,B,Sl,nkv,d) K then V of the block held / arriving
  Tensor dkv[2];    // (2,B,Sl,nkv,d) dK then dV travelling with a block
  Tensor dkv_part;  // (2,B,Sl,nkv,d) this rank's contribution to the held block
  Tensor o_part;    // (C,nh,d) one chunk pair's output
  Tensor lse_part;  // (nh,C)
};

// Pointers into one sequence b's chunk c (0 or 1) of the local layouts.
struct ChunkView {
  const RingAttentionDims& dims;
  int64_t chunk;  // C
  int64_t q_offset(int64_t b, int c) const {
    return (b * dims.local_seq + c * chunk) * dims.heads * dims.head_dim;
  }
  int64_t kv_offset(int64_t b, int c) const {
    return (b * dims.local_seq + c * chunk) * dims.kv_heads * dims.head_dim;
  }
  int64_t lse_offset(int64_t b, int c) const { return (b * 2 + c) * dims.heads * chunk; }
};

std::vector<int32_t> chunk_positions(int global_chunk, int64_t chunk) {
  std::vector<int32_t> positions(chunk);
  std::iota(positions.begin(), positions.end(), static_cast<int32_t>(global_chunk * chunk));
  return positions;
}

// The (query chunk, key chunk) pairs of one ring step that are not fully masked: a key chunk
// after the query chunk sees nothing.
struct ChunkPair {
  int q, k;  // local chunk indices (0/1) in this rank's and the source's shard
  int q_global, k_global;
};
std::vector<ChunkPair> visible_pairs(int rank, int source, int cp_size) {
  const ContextChunks mine = context_chunks(rank, cp_size);
  const ContextChunks theirs = context_chunks(source, cp_size);
  const int q_chunks[2] = {mine.first, mine.second};
  const int k_chunks[2] = {theirs.first, theirs.second};
  std::vector<ChunkPair> pairs;
  for (int qi = 0; qi < 2; ++qi) {
    for (int kj = 0; kj < 2; ++kj) {
      if (k_chunks[kj] <= q_chunks[qi]) pairs.push_back({qi, kj, q_chunks[qi], k_chunks[kj]});
    }
  }
  return pairs;
}

std::vector<int32_t> iota_positions(int64_t n) {
  std::vector<int32_t> positions(n);
  std::iota(positions.begin(), positions.end(), 0);
  return positions;
}

}  // namespace

void ring_attention_forward(Communicator& cp, const RingAttentionDims& dims, const float* q,
                            const float* k, const float* v, float* o, float* lse,
                            bool overlap) {
  const int64_t B = dims.batch, Sl = dims.local_seq, nh = dims.heads, nkv = dims.kv_heads,
                d = dims.head_dim;
  const int CP = cp.size();
  if (CP == 1) {
    const std::vector<int32_t> positions = iota_positions(Sl);
    cpu::attention_forward(q, k, v, o, lse, positions.data(), positions.data(), B, Sl, Sl, nh,
                           nkv, d);
    return;
  }
  MOEFOLD_CHECK(Sl % 2 == 0, "local sequence " << Sl << " holds two chunks");
  const int64_t C = Sl / 2, kv_count = B * Sl * nkv * d;
  const ChunkView view{dims, C};
  RingBuffers sc;
  for (Tensor& t : sc.kv) ensure_shape(t, {2, kv_count});
  ensure_shape(sc.o_part, {C, nh, d});
  ensure_shape(sc.lse_part, {nh, C});
  std::memcpy(sc.kv[0].data(), k, kv_count * sizeof(float));
  std::memcpy(sc.kv[0].data() + kv_count, v, kv_count * sizeof(float));
  std::fill(o, o + B * Sl * nh * d, 0.0f);
  std::fill(lse, lse + B * 2 * nh * C, -std::numeric_limits<float>::infinity());

  KvRing ring(cp, overlap);
  for (int step = 0; step < CP; ++step) {
    const int cur = step % 2;
    if (step + 1 < CP) ring.start_pass(sc.kv[cur].data(), sc.kv[1 - cur].data(), 2 * kv_count);
    const auto start = std::chrono::steady_clock::now();
    const float* k_block = sc.kv[cur].data();
    const float* v_block = k_block + kv_count;
    for (const ChunkPair& p : visible_pairs(cp.rank(), ring.source(step), CP)) {
      const std::vector<int32_t> q_pos = chunk_positions(p.q_global, C);
      const std::vector<int32_t> k_pos = chunk_positions(p.k_global, C);
      for (int64_t b = 0; b < B; ++b) {
        cpu::attention_forward(q + view.q_offset(b, p.q), k_block + view.kv_offset(b, p.k),
                               v_block + view.kv_offset(b, p.k), sc.o_part.data(),
                               sc.lse_part.data(), q_pos.data(), k_pos.data(), 1, C, C, nh, nkv,
                               d);
        cpu::attention_merge(o + view.q_offset(b, p.q), lse + view.lse_offset(b, p.q),
                             sc.o_part.data(), sc.lse_part.data(), 1, C, nh, d);
      }
    }
    cp_communication_stats().compute_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step + 1 < CP) ring.finish_pass();
  }
}

void ring_attention_backward(Communicator& cp, const RingAttentionDims& dims, const float* dout,
                             const float* q, const float* k, const float* v, const float* o,
                             const float* lse, float* dq, float* dk, float* dv,
                             bool overlap) {
  const int64_t B = dims.batch, Sl = dims.local_seq, nh = dims.heads, nkv = dims.kv_heads,
                d = dims.head_dim;
  const int CP = cp.size();
  if (CP == 1) {
    const std::vector<int32_t> positions = iota_positions(Sl);
    cpu::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, positions.data(),
                            positions.data(), B, Sl, Sl, nh, nkv, d);
    return;
  }
  const int64_t C = Sl / 2, kv_count = B * Sl * nkv * d;
  const ChunkView view{dims, C};
  RingBuffers sc;
  for (Tensor& t : sc.kv) ensure_shape(t, {2, kv_count});
  for (Tensor& t : sc.dkv) ensure_shape(t, {2, kv_count});
  ensure_shape(sc.dkv_part, {2, kv_count});
  std::memcpy(sc.kv[0].data(), k, kv_count * sizeof(float));
  std::memcpy(sc.kv[0].data() + kv_count, v, kv_count * sizeof(float));

  // Step s: the held block's gradient so far arrives in dkv[s % 2] (step 0: starts at zero in
  // dkv[0]); this rank adds its part and sends it on. After the last step it comes home.
  KvRing ring(cp, overlap);
  for (int step = 0; step < CP; ++step) {
    const int cur = step % 2;
    if (step + 1 < CP) ring.start_pass(sc.kv[cur].data(), sc.kv[1 - cur].data(), 2 * kv_count);
    const auto start = std::chrono::steady_clock::now();
    Tensor& part = step == 0 ? sc.dkv[0] : sc.dkv_part;
    part.zero();
    const float* k_block = sc.kv[cur].data();
    const float* v_block = k_block + kv_count;
    float* dk_block = part.data();
    float* dv_block = dk_block + kv_count;
    for (const ChunkPair& p : visible_pairs(cp.rank(), ring.source(step), CP)) {
      const std::vector<int32_t> q_pos = chunk_positions(p.q_global, C);
      const std::vector<int32_t> k_pos = chunk_positions(p.k_global, C);
      for (int64_t b = 0; b < B; ++b) {
        const int64_t qo = view.q_offset(b, p.q), ko = view.kv_offset(b, p.k);
        cpu::attention_backward(dout + qo, q + qo, k_block + ko, v_block + ko, o + qo,
                                lse + view.lse_offset(b, p.q), dq + qo, dk_block + ko,
                                dv_block + ko, q_pos.data(), k_pos.data(), 1, C, C, nh, nkv, d);
      }
    }
    cp_communication_stats().compute_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step > 0) {
      ring.finish_gradient_receive();
      float* sum = sc.dkv[cur].data();
      const float* mine = sc.dkv_part.data();
      for (int64_t i = 0; i < 2 * kv_count; ++i) sum[i] += mine[i];
    }
    ring.finish_gradient_sends();  // the other buffer is free again
    ring.start_gradient_receive(sc.dkv[1 - cur].data(), 2 * kv_count);
    ring.send_gradient(sc.dkv[cur].data(), 2 * kv_count);
    if (step + 1 < CP) ring.finish_pass();
  }
  ring.finish_gradient_receive();
  ring.finish_gradient_sends();
  const float* home = sc.dkv[CP % 2].data();
  for (int64_t i = 0; i < kv_count; ++i) dk[i] += home[i];
  for (int64_t i = 0; i < kv_count; ++i) dv[i] += home[kv_count + i];
}

}  // namespace moefold
