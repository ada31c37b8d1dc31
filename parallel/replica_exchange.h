// The sparse collectives of load-driven FSSDP (parallel/expert_placement.h), whole experts over
// the EP group: spAG(P, P') sends each owner's experts to the ranks that replicate them, and
// spRS(P', P) brings the replicas' gradients back to the owners, which sum every holder's
// partial gradient in ascending rank order (deterministic whatever the arrival order). Only
// owners hold optimizer state; replicas are compute copies. An expert nobody replicates moves no
// bytes. Each is one all_to_all_v per weight part (gate, up, down), issued in the same order on
// every rank, zero counts included, so no routing can make it hang.
//
// A rank's materialised experts are its slots (ExpertPlacement::slots): owned experts first, then
// replicas in (owner, expert) order, which is the order in which one owner's experts arrive, so
// replicas are received in place and their gradients sent from place. Staging is Tensor storage,
// counted by the allocator statistics.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/expert_placement.h"
#include "parallel/sparse_shards.h"
#include "tensor/tensor.h"

namespace moefold {

struct ReplicaExchange {
  std::vector<Tensor> staging;      // per part: gather send staging / received gradient slices
  std::vector<WorkHandle> handles;  // per part
  Tensor sum;                       // one expert part: the ordered sum of its holders' gradients
  int64_t bytes_sent = 0;           // cumulative over exchanges: this rank's outgoing bytes
};

// owned: parts of this rank's owned experts (item i = owned slot i); materialised: parts of its
// slots (items 0 .. |slots|), of the same dtype (float32 masters, or bf16 compute copies under
// training.bf16): the owned experts are copied in, the replicas received. Completes with
// finish_replica_gather.
void start_replica_gather(Communicator& ep, const ExpertPlacement& placement,
                          std::span<const ShardPart> owned,
                          std::span<const ShardPart> materialised, ReplicaExchange& exchange);
void finish_replica_gather(ReplicaExchange& exchange);

// materialised: this rank's slots' partial gradients (left untouched until the finish). The
// finish adds, to each owned expert's gradient in owned_grads, the sum of its holders' partial
// gradients in ascending rank order (its own from the owned slots of materialised).
void start_replica_gradient_reduce(Communicator& ep, const ExpertPlacement& placement,
                                   std::span<const ShardPart> materialised,
                                   ReplicaExchange& exchange);
void finish_replica_gradient_reduce(Communicator& ep, const ExpertPlacement& placement,
                                    std::span<const ShardPart> materialised,
                                    std::span<const ShardPart> owned_grads,
                                    ReplicaExchange& exchange);

}  // namespace moefold
