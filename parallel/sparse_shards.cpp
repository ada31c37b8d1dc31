#include "parallel/sparse_shards.h"

#include <algorithm>
#include <cstring>

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

std::vector<int64_t> SparseShardPlan::items_of(int rank) const {
  std::vector<int64_t> out;
  for (int64_t k = 0; k < items; ++k)
    if (needs_item(rank, k)) out.push_back(k);
  return out;
}

SparseShardPlan plan_sparse_shards(Communicator& group, std::span<const uint8_t> needs_K,
                                   int64_t shard) {
  SparseShardPlan plan;
  plan.ranks = group.size();
  plan.items = static_cast<int64_t>(needs_K.size());
  plan.shard = shard;
  plan.needs.resize(plan.ranks * plan.items);
  group.all_gather(needs_K.data(), plan.items, plan.needs.data(), CommDType::kUInt8);
  plan.needed.assign(plan.ranks, 0);
  for (int r = 0; r < plan.ranks; ++r)
    for (int64_t k = 0; k < plan.items; ++k) plan.needed[r] += plan.needs_item(r, k);
  return plan;
}

float* ShardPart::floats() const {
  MOEFOLD_CHECK(dtype == CommDType::kFloat32, "FSSDP gradients must be float32");
  return static_cast<float*>(data);
}

DType ShardPart::tensor_dtype() const {
  MOEFOLD_CHECK(dtype == CommDType::kFloat32 || dtype == CommDType::kBFloat16,
                "FSSDP gathers move float32 or bf16, not " << comm_dtype_name(dtype));
  return dtype == CommDType::kFloat32 ? DType::kFloat32 : DType::kBFloat16;
}

// Makes `t` a flat buffer of at least n elements of `dtype` (one, so it always has storage).
static void* ensure_elements(Tensor& t, int64_t n, DType dtype = DType::kFloat32) {
  n = std::max<int64_t>(n, 1);
  if (!t.defined() || t.numel() < n || t.dtype() != dtype) t = Tensor::empty({n}, dtype);
  return t.raw_data();
}

// The one dtype of a gather's parts.
static CommDType parts_dtype(std::span<const ShardPart> parts) {
  MOEFOLD_CHECK(!parts.empty());
  for (const ShardPart& p : parts)
    MOEFOLD_CHECK(p.dtype == parts[0].dtype, "FSSDP gather parts of different dtypes");
  return parts[0].dtype;
}

static int64_t parts_size(std::span<const ShardPart> parts) {
  int64_t s = 0;
  for (const ShardPart& p : parts) s += p.per_item;
  return s;
}

void start_sparse_all_gather(Communicator& group, const SparseShardPlan& plan,
                             std::span<const ShardPart> shards, void* gathered,
                             SparseShardExchange& exchange) {
  const int P = plan.ranks, me = group.rank();
  const int64_t s = plan.shard;
  MOEFOLD_CHECK(parts_size(shards) == s && P == group.size());
  const CommDType dtype = parts_dtype(shards);
  const DType staging = shards[0].tensor_dtype();
  // To rank q: this rank's shard of each item q needs, in item order.
  std::vector<int64_t> send_counts(P), recv_counts(P);
  int64_t total = 0;
  for (int q = 0; q < P; ++q) total += plan.needed[q];
  auto* out = static_cast<std::byte*>(ensure_elements(exchange.send, total * s, staging));
  for (int q = 0; q < P; ++q) {
    send_counts[q] = plan.needed[q] * s;
    recv_counts[q] = plan.needed[me] * s;
    for (int64_t k = 0; k < plan.items; ++k) {
      if (!plan.needs_item(q, k)) continue;
      for (const ShardPart& part : shards) {
        ops::copy_memory(out, part.item(k), part.item_bytes());
        out += part.item_bytes();
      }
    }
  }
  exchange.handle = group.all_to_all_v_async(exchange.send.raw_data(), send_counts, gathered,
                                             recv_counts, dtype);
}

void start_sparse_reduce_scatter(Communicator& group, const SparseShardPlan& plan,
                                 const float* gradients, SparseShardExchange& exchange) {
  const int P = plan.ranks, me = group.rank();
  const int64_t s = plan.shard;
  MOEFOLD_CHECK(P == group.size());
  std::vector<int64_t> send_counts(P), recv_counts(P);
  int64_t total = 0;
  for (int q = 0; q < P; ++q) {
    send_counts[q] = plan.needed[me] * s;
    recv_counts[q] = plan.needed[q] * s;
    total += recv_counts[q];
  }
  ensure_elements(exchange.received, total);
  exchange.handle = group.all_to_all_v_async(gradients, send_counts, exchange.received.raw_data(),
                                             recv_counts, CommDType::kFloat32);
}

void finish_sparse_reduce_scatter(const SparseShardPlan& plan, SparseShardExchange& exchange,
                                  std::span<const ShardPart> shards) {
  MOEFOLD_CHECK(parts_size(shards) == plan.shard);
  exchange.handle.wait();
  const float* in = exchange.received.data();
  for (int q = 0; q < plan.ranks; ++q) {
    for (int64_t k = 0; k < plan.items; ++k) {
      if (!plan.needs_item(q, k)) continue;
      for (const ShardPart& part : shards) {
        ops::add_memory(part.floats() + k * part.per_item, in, part.per_item);
        in += part.per_item;
      }
    }
  }
}

void sparse_reduce_scatter(Communicator& group, const SparseShardPlan& plan,
                           const float* gradients, std::span<const ShardPart> shards) {
  SparseShardExchange exchange;
  start_sparse_reduce_scatter(group, plan, gradients, exchange);
  finish_sparse_reduce_scatter(plan, exchange, shards);
}

}  // namespace moefold
