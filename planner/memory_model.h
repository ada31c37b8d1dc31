// Memory of one rank: weights, gradients, optimizer state, activations and communication
// buffers, counted from the buffers moefold keeps (model/*.h stash structs, optim/, parallel/).
#pragma once

#include "planner/cluster.h"
#include "planner/workload.h"

namespace moefold {

// Parameter elements held by one rank of a pipeline stage.
struct StageParameters {
  double dense = 0;   // attention, norms, router, dense and shared MLPs, embedding / LM head (/TP)
  double experts = 0; // routed experts (/EP·ETP)
  double total() const { return dense + experts; }
};
StageParameters stage_parameters(const Workload& w, int stage);

// Activation elements of one stashed (micro-batch, chunk): the forward activations and the
// backward buffers the stash keeps for reuse (moefold's stashes keep both).
double layer_stash_elements(const Workload& w, int layer);
double chunk_stash_elements(const Workload& w, int stage, int chunk);

struct MemoryBreakdown {
  int stage = 0;              // the pipeline stage this breakdown is for
  double parameters = 0;      // bytes: weights as computed (+ float32 masters for bf16)
  double gradients = 0;       // float32 gradients
  double optimizer_state = 0; // Adam moments as configured (distributed optimizer, FSSDP)
  double optimizer_state_replicated = 0;  // ... without the distributed optimizer and FSSDP
  double optimizer_state_distributed = 0; // ... with the distributed optimizer
  double optimizer_state_fssdp = 0;       // ... with the distributed optimizer and FSSDP
  double activations = 0;     // stashes in flight under the schedule and recomputation
  double stashes_in_flight = 0;
  double loss_workspace = 0;  // the LM head's logits chunk (last stage)
  double communication_buffers = 0;  // distributed-optimizer shard, FSSDP gathers, CP ring
  double reserved = 0;        // the cluster's runtime reserve
  double total() const {
    return parameters + gradients + optimizer_state + activations + loss_workspace +
           communication_buffers + reserved;
  }
};

// The rank's memory on `stage`; worst_stage_memory returns the stage needing the most.
MemoryBreakdown stage_memory(const Workload& w, const ClusterSpec& cluster, int stage);
MemoryBreakdown worst_stage_memory(const Workload& w, const ClusterSpec& cluster);

}  // namespace moefold
