// Load-driven FSSDP for the MoE layer (parallel.fssdp_spare_slots > 0; Hecate's expert
// materialisation): the experts keep their EP owners (parameters, gradients and Adam state as
// under EP, so checkpoints are unchanged), and each micro-batch also materialises replicas of the
// experts the recent load says are hot (parallel/expert_placement.h) on other ranks of the EP
// group. The layer's dispatch then sees "slots" instead of experts: slot i of rank r (owned
// experts, then replicas) is dispatch id r·S + i, S = the fullest rank's slot count, so the
// dispatcher and grouped GEMMs run unchanged over S slots per rank.
//
// Per micro-batch:
//   start_gather    (before the attention, else at forward start) plan from the window of earlier micro-batches' counts, copy
//                   the owned experts into the workspace and receive the replicas (spAG);
//   route           after the router: all-gather every rank's per-expert counts with its plan
//                   hash (checked equal), push them into the window, keep for routing only the
//                   materialised replicas that help these counts (calibrate_placement), route
//                   each assignment to a holder (the routing table every rank computes the same);
//   finish_gather   before the experts compute (under training.bf16 the gathers move the
//                   owners' bf16 compute copies, half the bytes; gradients stay float32);
//   release         after forward when re-materialising (gathered again before backward);
//   start_gradient_reduce / finish_gradient_reduce   spRS onto the owners' gradients.
// A recomputed forward (training.recompute_granularity) is a forward like any: it plans from the
// window, which then holds its counts too, and its rows may go to other replicas than the first
// forward's; every plan computes EP's numbers, so backward sees the first forward's activations
// to float32 rounding.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/expert_placement.h"
#include "parallel/replica_exchange.h"
#include "tensor/tensor.h"

namespace moefold {

// One micro-batch's placement and materialised experts, kept from forward to backward.
struct ReplicaStash {
  ExpertPlacement placement;
  // (S_me,F,H) (S_me,F,H) (S_me,H,F): the gathered weights (float32 runs), then the gradients
  // after backward_dw.
  Tensor w_gate, w_up, w_down;
  // training.bf16: the slots' compute copies as gathered (the bits of the owners'
  // Parameter::compute_value()); undefined in float32 runs.
  Tensor c_gate, c_up, c_down;
  int64_t slots = 0;            // S_me: experts materialised on this rank
  int64_t slots_per_rank = 0;   // S: dispatch ids per rank
  std::vector<int32_t> dispatch_idx;  // (n,k) dispatch id of each assignment
  std::vector<int64_t> received;      // (EP, S) rows each rank sends to each of this rank's slots
  ReplicaExchange gather, reduction;
  bool gather_started = false;  // for this forward (before the attention, or by forward)
  bool materialised = false;  // the slots hold this micro-batch's weights (or gradients)
  bool reduction_pending = false;
};

// Cumulative over micro-batches (the caller resets them).
struct ReplicaStats {
  int64_t micro_batches = 0;
  int64_t replicas = 0;          // Σ replicas in the placements (whole EP group)
  int64_t replicas_held = 0;     // Σ replicas this rank materialised
  int64_t expert_rows = 0;       // rows this rank's slots computed
  int64_t ep_rows = 0;           // rows this rank's owned experts were routed (what EP computes)
  int64_t gather_bytes = 0;      // sent by this rank: spAG
  int64_t reduce_bytes = 0;      // sent by this rank: spRS
  double blocked_seconds = 0;    // waits for spAG and spRS
};

class ExpertReplicas {
 public:
  // gate, up, down: the layer's owned experts (El,F,H) (El,F,H) (El,H,F) and their gradients.
  ExpertReplicas(const ParallelContext& ctx, int64_t experts, Parameter* gate, Parameter* up,
                 Parameter* down);

  // Tests: every later micro-batch uses this placement instead of the load-driven plan.
  void force_placement(std::optional<ExpertPlacement> placement) { forced_ = std::move(placement); }

  void start_gather(ReplicaStash& stash);
  // The weights the slots compute with: the bf16 copies under training.bf16, else the slots.
  const Tensor& gate_weights(const ReplicaStash& stash) const;
  const Tensor& up_weights(const ReplicaStash& stash) const;
  const Tensor& down_weights(const ReplicaStash& stash) const;
  // idx, keep (n,k): the router's choices; fills stash.dispatch_idx and stash.received.
  void route(std::span<const int32_t> idx, std::span<const uint8_t> keep, ReplicaStash& stash);
  void finish_gather(ReplicaStash& stash);
  // After forward: frees the workspace when re-materialising (parallel.fssdp_rematerialise);
  // the next forward plans and gathers again.
  void release(ReplicaStash& stash) const;
  // Before backward_dx: gathers the workspace again if it was released.
  void rematerialise(ReplicaStash& stash);
  void start_gradient_reduce(ReplicaStash& stash);
  void finish_gradient_reduce(ReplicaStash& stash);

  const ReplicaStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  static constexpr int kWindow = 5;  // micro-batches of counts behind the load estimate

 private:
  std::vector<ShardPart> owned_parts(bool gradients) const;
  std::vector<ShardPart> slot_parts(const ReplicaStash& stash, bool gradients) const;
  bool rounds() const { return gate_->compute.defined(); }  // training.bf16
  const ParallelContext& ctx_;
  Parameter *gate_, *up_, *down_;
  int64_t experts_, ffn_, hidden_;
  PlacementBudget budget_;
  bool rematerialise_;
  std::vector<int> owners_;
  LoadWindow window_;
  std::optional<ExpertPlacement> forced_;
  ReplicaStats stats_;
};

}  // namespace moefold
