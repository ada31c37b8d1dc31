// Sparse collectives of Fully Sharded Sparse Data Parallelism (FSSDP, the Hecate paper). K items
// (a rank's local experts) are each sharded evenly over a group: rank j holds shard j of every
// item, s elements made of one or more parts (an expert's gate, up and down slices). In a
// micro-batch a rank materialises only the items it needs (experts its tokens reach):
//   sparse all-gather:     it receives every rank's shard of each item it needs;
//   sparse reduce-scatter: it sends each needed item's gradient back, slice j to rank j, where
//                          the slices from every rank that needed the item are summed.
// An item nobody needs moves no bytes. Both are one all_to_all_v over the group, after one
// all-gather of the need flags (the plan).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

// One part of every item's shard: item k's part is elements [k·per_item, (k+1)·per_item) of
// data. Gathers move float32 masters, or under training.bf16 the bf16 compute copies (dtype);
// gradients are float32.
struct ShardPart {
  void* data;
  int64_t per_item;
  CommDType dtype = CommDType::kFloat32;

  size_t item_bytes() const { return per_item * comm_dtype_size(dtype); }
  std::byte* item(int64_t k) const { return static_cast<std::byte*>(data) + k * item_bytes(); }
  float* floats() const;  // data, which must be float32 (gradients)
  DType tensor_dtype() const;  // of staging for this part
};

struct SparseShardPlan {
  int ranks = 0;
  int64_t items = 0, shard = 0;  // K, s = Σ parts' per_item
  std::vector<uint8_t> needs;    // (ranks, K) 1 = the rank needs the item
  std::vector<int64_t> needed;   // (ranks) items each rank needs

  bool needs_item(int rank, int64_t item) const { return needs[rank * items + item] != 0; }
  // Items this rank needs, in item order (the order of the gathered and gradient layouts).
  std::vector<int64_t> items_of(int rank) const;
};

// Collective over `group`: every rank's need flags (K).
SparseShardPlan plan_sparse_shards(Communicator& group, std::span<const uint8_t> needs_K,
                                   int64_t shard);

// Staging is Tensor storage, so the allocator statistics (reported peak memory) count it.
struct SparseShardExchange {
  Tensor send, received;  // (≥ 1) flat; received: the reduce-scatter's incoming slices
  WorkHandle handle;
};

// gathered (ranks, n, s), n = items this rank needs: at [j][i] rank j's shard of the i-th needed
// item (parts concatenated in the order given), in the parts' dtype (one for all). Completes
// with exchange.handle.wait().
void start_sparse_all_gather(Communicator& group, const SparseShardPlan& plan,
                             std::span<const ShardPart> shards, void* gathered,
                             SparseShardExchange& exchange);

// gradients (ranks, n, s): at [j][i] slice j of the i-th needed item's gradient (same layout as
// the gather). Adds, for every item, the sum over the ranks that needed it of their slice for
// this rank into `shards` (the parts' gradients); deterministic (sums in rank order). The start
// form leaves the exchange in flight (gradients untouched until the finish); the finish waits
// and adds.
void sparse_reduce_scatter(Communicator& group, const SparseShardPlan& plan,
                           const float* gradients, std::span<const ShardPart> shards);
void start_sparse_reduce_scatter(Communicator& group, const SparseShardPlan& plan,
                                 const float* gradients, SparseShardExchange& exchange);
void finish_sparse_reduce_scatter(const SparseShardPlan& plan, SparseShardExchange& exchange,
                                  std::span<const ShardPart> shards);

}  // namespace moefold
