// Causal attention over the context-parallel ring (ring attention). Each CP rank holds the
// load-balanced shard of every sequence (context_shard.h): Sl = S/CP tokens, chunk r then chunk
// 2·CP−1−r, C = S/(2·CP) tokens each. Forward: attention of the local queries against the local
// K/V, then against each other rank's K/V as it arrives around the ring (the next block's
// transfer overlapping the current block's compute), partial results merged with their
// log-sum-exp. Causal masking uses global positions per chunk pair; pairs whose key chunk comes
// after the query chunk are skipped. Backward walks the ring the same way, dq accumulating here
// and each block's dK/dV travelling with it back to its owner.
//
// Layouts (row-major): q, o, dq, dout (B,Sl,nh,d); k, v, dk, dv (B,Sl,nkv,d); lse (B,2,nh,C)
// (per query chunk, the layout the merge and the backward need). With CP = 1 this is plain
// causal attention over positions 0..S−1 (lse then (B,nh,S), which is the same layout).
// The ring's buffers (two K/V blocks, the travelling dK/dV) live only during a call, so they are
// not kept per layer.
#pragma once

#include <cstdint>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

struct RingAttentionDims {
  int64_t batch, local_seq, heads, kv_heads, head_dim;  // B, Sl, nh, nkv, d (this rank's heads)
};

// o and lse overwritten. overlap false waits for each transfer at once (benchmark baseline).
void ring_attention_forward(Communicator& cp, const RingAttentionDims& dims, const Tensor& q,
                            const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                            bool overlap = true);

// o and lse from ring_attention_forward. dq, dk, dv ACCUMULATE (as ops::attention_backward).
void ring_attention_backward(Communicator& cp, const RingAttentionDims& dims, const Tensor& dout,
                             const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                             const Tensor& lse, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, bool overlap = true);

}  // namespace moefold
