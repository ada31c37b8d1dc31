// Load-driven expert placement of FSSDP as Hecate (arXiv 2502.02581) means it: each MoE layer's
// experts have one owner each (fp32 master, gradient, Adam state: the EP layout), and per
// micro-batch some experts are also materialised, as compute-only replicas, on other ranks of
// the EP group, where the recent load says they lower the busiest rank's token count. Tokens
// then go to a replica on their own rank first, then one on their node, then any, each expert's
// rows split evenly over its holders.
//
// Everything here is pure integer arithmetic with stated tie-breaks, free of MPI: every rank
// computes the same placement and the same routing table from the same all-gathered counts, so
// the all-to-all sizes and the replica exchanges need no further agreement.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moefold {

// Budgets per rank and per MoE layer.
struct PlacementBudget {
  int spare_slots = 0;     // m: replicas a rank may hold (memory); 0 = plain EP
  int overlap_degree = 0;  // t: expert copies a rank may send, and receive (0 = no limit),
                           // so that the gather fits behind the attention before the layer
};

// Which ranks materialise which experts. A rank's slots are its owned experts in expert order,
// then its replicas in (owner, expert) order: the order in which the grouped GEMMs see them and
// in which the replica exchanges lay them out (parallel/replica_exchange.h).
struct ExpertPlacement {
  int ranks = 0;
  std::vector<int> owner;                   // (E) owner rank of each expert
  std::vector<std::vector<int>> holders;    // (E) ranks materialising it, ascending (owner in)
  std::vector<std::vector<int64_t>> slots;  // (ranks) expert of each slot
  std::vector<int64_t> owned;               // (ranks) owned experts (the first slots)

  int64_t experts() const { return static_cast<int64_t>(owner.size()); }
  int64_t max_slots() const;                     // S: slots of the fullest rank
  int64_t slot_of(int rank, int64_t expert) const;  // -1 when not materialised there
  int64_t replicas() const;                      // Σ (holders - 1)
  uint64_t hash() const;                         // FNV-1a over (ranks, owners, holders)
};

// The EP layout: expert e owned by rank e / (E / ranks); no replicas.
std::vector<int> ep_owners(int64_t experts, int ranks);

// The placement with the given holders (each list must contain the owner; sorted and
// deduplicated here). Used by the planner and by tests that force a plan.
ExpertPlacement make_placement(std::vector<int> owner, std::vector<std::vector<int>> holders,
                               int ranks);

// Rows of an expert with `load` rows that its holder number `i` (of `holders`, ascending
// ranks) computes: an even split, the remainder to the lower ranks.
int64_t replica_quota(int64_t load, int64_t holders, int64_t i);

// Predicted rows per rank (ranks) when expert e carries load_E[e] rows, split by replica_quota.
std::vector<int64_t> predicted_rank_load(const ExpertPlacement& placement,
                                         std::span<const int64_t> load_E);

// The plan: starting from the owners, repeatedly take the busiest rank (lowest rank on ties)
// and try its experts by decreasing share of its load (lower expert on ties); the replica goes
// to the least loaded rank that does not hold the expert and has budget left (lowest rank on
// ties), and is kept only when it lowers (predicted max load, ranks at that max)
// lexicographically. Stops when no replica does, or the budgets are spent; then
// calibrate_placement drops the replicas a later one made useless.
ExpertPlacement plan_expert_placement(std::span<const int64_t> load_E, std::vector<int> owner,
                                      int ranks, PlacementBudget budget);

// The replicas of `placement` worth using for loads load_E: drops, in (expert, rank) order, every
// replica whose removal does not raise (predicted max load, ranks at that max), until each one
// left is needed. The planner's last pass; and the calibration after the gate, which routes the
// micro-batch's actual counts only to the materialised replicas that help (the recent load the
// plan came from can be stale when the routing moves fast).
ExpertPlacement calibrate_placement(const ExpertPlacement& placement,
                                    std::span<const int64_t> load_E);

// Rows each source rank sends to each holder: rows[e][s · |holders_e| + i] for source s and the
// i-th holder of e. Each holder computes replica_quota of e's total; a source's rows fill, in
// this order, its own rank's quota, then quotas on its node, then any, holders and sources in
// ascending rank order.
struct ReplicaRoutes {
  std::vector<std::vector<int64_t>> rows;  // (E, ranks × |holders_e|)

  int64_t to(const ExpertPlacement& p, int source, int64_t expert, int64_t holder) const {
    return rows[expert][source * p.holders[expert].size() + holder];
  }
};

// counts_WE (ranks, E): rows every source routed to every expert this micro-batch.
// node_of_rank (ranks) the node of each rank; empty = one node.
ReplicaRoutes route_to_replicas(const ExpertPlacement& placement,
                                std::span<const int64_t> counts_WE,
                                std::span<const int> node_of_rank = {});

// The load estimate: the sum of the last `window` count vectors (E) pushed.
class LoadWindow {
 public:
  LoadWindow(int64_t experts, int window);
  void push(std::span<const int64_t> load_E);
  const std::vector<int64_t>& sum() const { return sum_; }
  int64_t entries() const { return static_cast<int64_t>(history_.size()); }

 private:
  int window_;
  std::vector<std::vector<int64_t>> history_;  // oldest first
  std::vector<int64_t> sum_;                   // (E)
};

}  // namespace moefold
