#include "parallel/replica_exchange.h"

#include <algorithm>
#include <cstddef>

#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

// Experts owned by `owner` that rank `holder` replicates, in holder's slot order.
std::vector<int64_t> replicas_from(const ExpertPlacement& p, int owner, int holder) {
  std::vector<int64_t> out;
  const std::vector<int64_t>& slots = p.slots[holder];
  for (size_t i = p.owned[holder]; i < slots.size(); ++i)
    if (p.owner[slots[i]] == owner) out.push_back(slots[i]);
  return out;
}

void check_parts(std::span<const ShardPart> a, std::span<const ShardPart> b) {
  MOEFOLD_CHECK(a.size() == b.size() && !a.empty());
  for (size_t k = 0; k < a.size(); ++k)
    MOEFOLD_CHECK(a[k].per_item == b[k].per_item && a[k].dtype == b[k].dtype);
}

}  // namespace

void start_replica_gather(Communicator& ep, const ExpertPlacement& p,
                          std::span<const ShardPart> owned,
                          std::span<const ShardPart> materialised, ReplicaExchange& x) {
  const int W = p.ranks, me = ep.rank();
  MOEFOLD_CHECK(W == ep.size());
  check_parts(owned, materialised);
  const int64_t own = p.owned[me];
  std::vector<std::vector<int64_t>> to(W);  // owned slot of each expert sent to each rank
  int64_t sent = 0;
  for (int q = 0; q < W; ++q) {
    for (int64_t e : replicas_from(p, me, q)) to[q].push_back(p.slot_of(me, e));
    sent += static_cast<int64_t>(to[q].size());
  }
  std::vector<int64_t> received_from(W, 0);
  for (int o = 0; o < W; ++o)
    received_from[o] = static_cast<int64_t>(replicas_from(p, o, me).size());
  x.staging.resize(owned.size());
  x.handles.resize(owned.size());
  for (size_t k = 0; k < owned.size(); ++k) {
    const ShardPart& part = owned[k];
    const int64_t n = part.per_item;
    const size_t item_bytes = part.item_bytes();
    ops::copy_memory(materialised[k].data, part.data, own * item_bytes);
    // Staging in the parts' dtype: float32 masters, or under training.bf16 the compute copies.
    const DType dtype = part.tensor_dtype();
    Tensor& send = x.staging[k];
    if (!send.defined() || send.numel() < std::max<int64_t>(sent * n, 1) || send.dtype() != dtype)
      send = Tensor::empty({std::max<int64_t>(sent * n, 1)}, dtype);
    auto* out = static_cast<std::byte*>(send.raw_data());
    std::vector<int64_t> send_counts(W), recv_counts(W);
    for (int q = 0; q < W; ++q) {
      for (int64_t slot : to[q]) {
        ops::copy_memory(out, part.item(slot), item_bytes);
        out += item_bytes;
      }
      send_counts[q] = static_cast<int64_t>(to[q].size()) * n;
      recv_counts[q] = received_from[q] * n;
      x.bytes_sent += static_cast<int64_t>(to[q].size() * item_bytes);
    }
    x.handles[k] = ep.all_to_all_v_async(send.raw_data(), send_counts, materialised[k].item(own),
                                         recv_counts, part.dtype);
  }
}

void finish_replica_gather(ReplicaExchange& x) {
  for (WorkHandle& h : x.handles) h.wait();
}

void start_replica_gradient_reduce(Communicator& ep, const ExpertPlacement& p,
                                   std::span<const ShardPart> materialised,
                                   ReplicaExchange& x) {
  const int W = p.ranks, me = ep.rank();
  MOEFOLD_CHECK(W == ep.size());
  const int64_t own = p.owned[me];
  std::vector<int64_t> to_owner(W, 0), from(W, 0);
  int64_t received = 0;
  for (int q = 0; q < W; ++q) {
    to_owner[q] = static_cast<int64_t>(replicas_from(p, q, me).size());
    from[q] = static_cast<int64_t>(replicas_from(p, me, q).size());
    received += from[q];
  }
  x.staging.resize(materialised.size());
  x.handles.resize(materialised.size());
  for (size_t k = 0; k < materialised.size(); ++k) {
    const int64_t n = materialised[k].per_item;
    Tensor& recv = x.staging[k];
    if (!recv.defined() || recv.numel() < std::max<int64_t>(received * n, 1))
      recv = Tensor::empty({std::max<int64_t>(received * n, 1)});
    std::vector<int64_t> send_counts(W), recv_counts(W);
    for (int q = 0; q < W; ++q) {
      send_counts[q] = to_owner[q] * n;
      recv_counts[q] = from[q] * n;
      x.bytes_sent += send_counts[q] * static_cast<int64_t>(sizeof(float));
    }
    x.handles[k] = ep.all_to_all_v_async(materialised[k].floats() + own * n, send_counts,
                                         recv.data(), recv_counts, CommDType::kFloat32);
  }
}

void finish_replica_gradient_reduce(Communicator& ep, const ExpertPlacement& p,
                                    std::span<const ShardPart> materialised,
                                    std::span<const ShardPart> owned_grads,
                                    ReplicaExchange& x) {
  const int W = p.ranks, me = ep.rank();
  check_parts(materialised, owned_grads);
  for (WorkHandle& h : x.handles) h.wait();
  // Where each (holder, owned expert) partial gradient sits in the received staging (in items).
  std::vector<std::vector<int64_t>> from(W);
  for (int q = 0; q < W; ++q) from[q] = replicas_from(p, me, q);
  std::vector<int64_t> first(W + 1, 0);
  for (int q = 0; q < W; ++q) first[q + 1] = first[q] + static_cast<int64_t>(from[q].size());
  for (size_t k = 0; k < materialised.size(); ++k) {
    const int64_t n = materialised[k].per_item;
    for (int64_t i = 0; i < p.owned[me]; ++i) {
      const int64_t e = p.slots[me][i];
      float* grad = owned_grads[k].floats() + i * n;
      const std::vector<int>& holders = p.holders[e];
      if (holders.size() == 1) {  // nobody else computed it: no reordering to do
        ops::add_memory(grad, materialised[k].floats() + i * n, n);
        continue;
      }
      // The sum over holders in ascending rank order, then added to the accumulated gradient.
      if (!x.sum.defined() || x.sum.numel() < n) x.sum = Tensor::empty({n});
      float* sum = x.sum.data();
      bool started = false;
      for (int r : holders) {
        const float* partial = materialised[k].floats() + i * n;
        if (r != me) {
          const auto at = std::find(from[r].begin(), from[r].end(), e) - from[r].begin();
          partial = x.staging[k].data() + (first[r] + at) * n;
        }
        if (!started) {
          ops::copy_memory(sum, partial, n * sizeof(float));
          started = true;
        } else {
          ops::add_memory(sum, partial, n);
        }
      }
      ops::add_memory(grad, sum, n);
    }
  }
}

}  // namespace moefold
