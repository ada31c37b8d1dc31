#include "model/ring_attention.h"

#include <chrono>
#include <limits>
#include <numeric>
#include <vector>

#include "model/context_shard.h"
#include "model/scratch.h"
#include "parallel/cp_communication.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

struct RingBuffers {
  Tensor kv[2];     // (2,B,Sl,nkv,d) K then V of the block held / arriving
  Tensor dkv[2];    // (2,B,Sl,nkv,d) dK then dV travelling with a block
  Tensor dkv_part;  // (2,B,Sl,nkv,d) this rank's contribution to the held block
  Tensor o_part;    // (C,nh,d) one chunk pair's output
  Tensor lse_part;  // (nh,C)
};

// Views of one sequence b's chunk c (0 or 1) in the local layouts.
struct ChunkView {
  const RingAttentionDims& dims;
  int64_t chunk;  // C
  Tensor q(const Tensor& t, int64_t b, int c) const {  // (C,nh,d)
    return t.elements((b * dims.local_seq + c * chunk) * dims.heads * dims.head_dim,
                      {chunk, dims.heads, dims.head_dim});
  }
  Tensor kv(const Tensor& t, int64_t b, int c) const {  // (C,nkv,d)
    return t.elements((b * dims.local_seq + c * chunk) * dims.kv_heads * dims.head_dim,
                      {chunk, dims.kv_heads, dims.head_dim});
  }
  Tensor lse(const Tensor& t, int64_t b, int c) const {  // (nh,C)
    return t.elements((b * 2 + c) * dims.heads * chunk, {dims.heads, chunk});
  }
  ops::AttentionShape pair_shape() const {
    return {1, chunk, chunk, dims.heads, dims.kv_heads, dims.head_dim};
  }
};

ops::AttentionShape whole_shape(const RingAttentionDims& d) {
  return {d.batch, d.local_seq, d.local_seq, d.heads, d.kv_heads, d.head_dim};
}

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

void ring_attention_forward(Communicator& cp, const RingAttentionDims& dims, const Tensor& q,
                            const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                            bool overlap) {
  const int64_t B = dims.batch, Sl = dims.local_seq, nh = dims.heads, nkv = dims.kv_heads,
                d = dims.head_dim;
  const int CP = cp.size();
  if (CP == 1) {
    const std::vector<int32_t> positions = iota_positions(Sl);
    ops::attention_forward(q, k, v, o, lse, positions, positions, whole_shape(dims));
    return;
  }
  MOEFOLD_CHECK(Sl % 2 == 0, "local sequence " << Sl << " holds two chunks");
  const int64_t C = Sl / 2, kv_count = B * Sl * nkv * d;
  const ChunkView view{dims, C};
  RingBuffers sc;
  for (Tensor& t : sc.kv) ensure_shape(t, {2, kv_count}, k.dtype());
  ensure_shape(sc.o_part, {C, nh, d}, o.dtype());
  ensure_shape(sc.lse_part, {nh, C});
  ops::copy(sc.kv[0].slice_rows(0, 1), k);
  ops::copy(sc.kv[0].slice_rows(1, 2), v);
  o.zero();
  lse.fill(-std::numeric_limits<float>::infinity());

  KvRing ring(cp, overlap);
  for (int step = 0; step < CP; ++step) {
    const int cur = step % 2;
    if (step + 1 < CP) {
      ring.start_pass(sc.kv[cur].raw_data(), sc.kv[1 - cur].raw_data(), 2 * kv_count,
                      comm_dtype_of(k.dtype()));
    }
    const auto start = std::chrono::steady_clock::now();
    const Tensor k_block = sc.kv[cur].slice_rows(0, 1), v_block = sc.kv[cur].slice_rows(1, 2);
    for (const ChunkPair& p : visible_pairs(cp.rank(), ring.source(step), CP)) {
      const std::vector<int32_t> q_pos = chunk_positions(p.q_global, C);
      const std::vector<int32_t> k_pos = chunk_positions(p.k_global, C);
      for (int64_t b = 0; b < B; ++b) {
        ops::attention_forward(view.q(q, b, p.q), view.kv(k_block, b, p.k),
                               view.kv(v_block, b, p.k), sc.o_part, sc.lse_part, q_pos, k_pos,
                               view.pair_shape());
        ops::attention_merge(view.q(o, b, p.q), view.lse(lse, b, p.q), sc.o_part, sc.lse_part,
                             view.pair_shape());
      }
    }
    cp_communication_stats().compute_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step + 1 < CP) ring.finish_pass();
  }
}

void ring_attention_backward(Communicator& cp, const RingAttentionDims& dims, const Tensor& dout,
                             const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                             const Tensor& lse, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, bool overlap) {
  const int64_t B = dims.batch, Sl = dims.local_seq, nkv = dims.kv_heads, d = dims.head_dim;
  const int CP = cp.size();
  if (CP == 1) {
    const std::vector<int32_t> positions = iota_positions(Sl);
    ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, positions, positions,
                            whole_shape(dims));
    return;
  }
  const int64_t C = Sl / 2, kv_count = B * Sl * nkv * d;
  const ChunkView view{dims, C};
  RingBuffers sc;
  // K and V travel in the activations' dtype; their gradients add up in float32 on the way.
  for (Tensor& t : sc.kv) ensure_shape(t, {2, kv_count}, k.dtype());
  for (Tensor& t : sc.dkv) ensure_shape(t, {2, kv_count});
  ensure_shape(sc.dkv_part, {2, kv_count});
  ops::copy(sc.kv[0].slice_rows(0, 1), k);
  ops::copy(sc.kv[0].slice_rows(1, 2), v);

  // Step s: the held block's gradient so far arrives in dkv[s % 2] (step 0: starts at zero in
  // dkv[0]); this rank adds its part and sends it on. After the last step it comes home.
  KvRing ring(cp, overlap);
  for (int step = 0; step < CP; ++step) {
    const int cur = step % 2;
    if (step + 1 < CP) {
      ring.start_pass(sc.kv[cur].raw_data(), sc.kv[1 - cur].raw_data(), 2 * kv_count,
                      comm_dtype_of(k.dtype()));
    }
    const auto start = std::chrono::steady_clock::now();
    Tensor& part = step == 0 ? sc.dkv[0] : sc.dkv_part;
    part.zero();
    const Tensor k_block = sc.kv[cur].slice_rows(0, 1), v_block = sc.kv[cur].slice_rows(1, 2);
    const Tensor dk_block = part.slice_rows(0, 1), dv_block = part.slice_rows(1, 2);
    for (const ChunkPair& p : visible_pairs(cp.rank(), ring.source(step), CP)) {
      const std::vector<int32_t> q_pos = chunk_positions(p.q_global, C);
      const std::vector<int32_t> k_pos = chunk_positions(p.k_global, C);
      for (int64_t b = 0; b < B; ++b) {
        ops::attention_backward(view.q(dout, b, p.q), view.q(q, b, p.q),
                                view.kv(k_block, b, p.k), view.kv(v_block, b, p.k),
                                view.q(o, b, p.q), view.lse(lse, b, p.q), view.q(dq, b, p.q),
                                view.kv(dk_block, b, p.k), view.kv(dv_block, b, p.k), q_pos,
                                k_pos, view.pair_shape());
      }
    }
    cp_communication_stats().compute_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (step > 0) {
      ring.finish_gradient_receive();
      ops::add(sc.dkv[cur], sc.dkv_part);
    }
    ring.finish_gradient_sends();  // the other buffer is free again
    ring.start_gradient_receive(sc.dkv[1 - cur].data(), 2 * kv_count);
    ring.send_gradient(sc.dkv[cur].data(), 2 * kv_count);
    if (step + 1 < CP) ring.finish_pass();
  }
  ring.finish_gradient_receive();
  ring.finish_gradient_sends();
  const Tensor& home = sc.dkv[CP % 2];
  ops::add(dk, home.slice_rows(0, 1));
  ops::add(dv, home.slice_rows(1, 2));
}

}  // namespace moefold
