// The MoE layer of MODEL.md: router → permutation of the (token, choice) assignments by expert →
// dispatch to the experts' owners (parallel/ep_dispatch.h) → grouped SwiGLU expert GEMMs →
// combine back and mix with the gate weights, plus the optional shared expert.
// Experts are split over EP (E/EP local experts, global id = ep_rank·E/EP + i) and each expert's
// F over ETP (gate/up column-parallel, down row-parallel). Each rank routes its own tokens: a
// context-parallel rank takes its CP shard of the micro-batch; under sequence parallelism each
// TP rank holds and routes its own token rows of it (the shared expert gathers and
// reduce-scatters them itself), otherwise the rows are replicated over TP and each TP rank
// routes an even share (folding) and the outputs are gathered. The router's statistics and the
// capacity decision are taken over the whole micro-batch in token order, so every number is one
// process's. The gate weights stay on the routing rank and are applied there after the combine.
// Dropless by default; with a capacity factor the router's keep-mask removes assignments before
// the permutation, so dropped assignments cost nothing and contribute 0.
// Under FSSDP (parallel.moe_fssdp) the expert weights are stored sharded over expert-DP along F:
// once the dispatch plan says which local experts receive rows, only those are gathered
// (parallel/sparse_shards.h) into a workspace shared by the model's MoE layers, overlapping the
// shared expert and the dispatch; backward gathers them again and reduce-scatters their
// gradients onto the shards, so the shards' gradients are complete over expert-DP.
// Under load-driven FSSDP (parallel.fssdp_spare_slots > 0, model/moe_replicas.h) the experts stay
// whole on their EP owners and hot ones are also materialised on other EP ranks for a
// micro-batch; tokens are dispatched to slots (owned experts, then replicas) instead of experts.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/compute_timer.h"
#include "model/mlp.h"
#include "model/model_config.h"
#include "model/moe_replicas.h"
#include "model/parameter.h"
#include "model/router.h"
#include "parallel/context.h"
#include "parallel/ep_dispatch.h"
#include "parallel/sparse_shards.h"
#include "tensor/tensor.h"

namespace moefold {

// The rows given to the MoE layer: this context-parallel rank's shard of a micro-batch of
// `batch` sequences of `seq` tokens, B·S/CP rows, row i at position positions[i] of sequence
// i / (S/CP) (model/context_shard.h). positions null: the whole micro-batch in order.
struct MoeRows {
  int64_t batch = 0, seq = 0;
  const int32_t* positions = nullptr;
};

// FSSDP: one MoE layer's materialised expert weights (n,Fl,H), (n,Fl,H), (n,H,Fl), n = the local
// experts this rank's tokens reach in the micro-batch (SparseShardPlan::items_of, in that order),
// and the exchange buffer, shared by all MoE layers of a model (they compute in turn). backward_dw
// needs no weights, so their gradients are formed in the same tensors before the reduce-scatter.
// The weights are views of memory that grows to the most experts a micro-batch materialised.
// Under training.bf16 the gathers move the shards' bf16 compute copies (the bits of
// Parameter::compute_value()), half the bytes, into `gathered` and then the compute copies the
// GEMMs read; w_gate.. then hold only the float32 gradients.
struct ExpertWorkspace {
  Tensor w_gate, w_up, w_down;
  Tensor gate_memory, up_memory, down_memory;  // flat
  Tensor c_gate, c_up, c_down;                 // training.bf16: the compute copies
  Tensor c_gate_memory, c_up_memory, c_down_memory;
  bool rounded = false;  // the compute copies are in use
  Tensor exchange;  // (EDP, n, s) gathered shards (float32 runs), then gradient slices
  Tensor gathered;  // training.bf16: (EDP, n, s) the gathered bf16 shards
  SparseShardExchange gather, reduction;
  bool reduction_pending = false;  // a layer's gradient reduce-scatter is in flight
  int64_t experts_gathered = 0;  // cumulative: local experts materialised by forward gathers
  int64_t expert_slots = 0;      // cumulative: local experts those gathers could have moved
  double blocked_seconds = 0;    // cumulative: waits for gathers and reduce-scatters

  const Tensor& compute_gate() const { return rounded ? c_gate : w_gate; }
  const Tensor& compute_up() const { return rounded ? c_up : w_up; }
  const Tensor& compute_down() const { return rounded ? c_down : w_down; }
};

struct MoeStash {
  RouterStash router;
  MlpStash shared;
  // The layer takes N rows; this rank routes n of them, rows [first, first + n) (n = N unless
  // split over TP without sequence parallelism).
  int64_t input_rows = 0, first = 0;  // N, first
  int64_t rows = 0;               // R kept assignments routed by this rank
  std::vector<int64_t> counts;    // (E) kept rows per global expert
  std::vector<int32_t> perm;      // (R) source assignment t·k+j of each expert-sorted row
  std::vector<int32_t> send_perm; // (R) source assignment of each row in dispatch order
  DispatchPlan plan;              // counts and orders of the exchange, forward and backward
  DispatchBuffers buffers;        // exchanges in flight
  Tensor xs;                      // (R,H) this rank's rows in dispatch order
  Tensor ys;                      // (R,H) their expert outputs, combined back
  Tensor dys;                     // (R,H) d loss / d ys
  Tensor dxs;                     // (R,H) d loss / d xs, combined back
  // Expert side: the Re rows this rank's experts compute, chunk by chunk, grouped by expert.
  Tensor xe;                      // (Re,H) dispatched inputs
  Tensor gate, up;                // (Re,F/ETP); hold their gradients after backward_dx
  Tensor act;                     // (Re,F/ETP) silu(gate)·up
  Tensor ye;                      // (Re,H) expert outputs (partial sums over ETP)
  Tensor dye;                     // (Re,H) d loss / d ye
  Tensor dact;                    // (Re,F/ETP)
  Tensor dxe;                     // (Re,H) d loss / d xe (partial sums over ETP)
  Tensor dgates;                  // (n,k)
  SparseShardPlan fssdp;          // FSSDP: which local experts each expert-DP rank needs
  std::vector<int64_t> fssdp_offsets;  // FSSDP: (chunks, n+1) row offsets of the materialised
  ReplicaStash replicas;          // load-driven FSSDP: placement, materialised slots, exchanges
  // Token-split only (TP > 1): this rank's routed rows and all TP ranks' gathered.
  Tensor routed;                  // (n,H) routed output, then d loss / d x of these rows
  Tensor routed_all;              // (N,H)
  double aux_scale = 1.0;         // weight of this micro-batch's balance + z losses
  ComputeSeconds expert_compute;  // cumulative: the grouped expert GEMMs (the caller resets it)
};

class MoeLayer {
 public:
  // workspace: shared by a model's MoE layers under FSSDP (null: the layer makes its own).
  MoeLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
           ParameterRegistry& registry, std::shared_ptr<ExpertWorkspace> workspace = nullptr);

  // y (N,H) = (accumulate ? y : 0) + moe(x) for the N rows of x described by `rows`: the CP
  // shard's rows, or under sequence parallelism this TP rank's N of them (rows tp_rank·N on).
  // aux_scale weights the router losses in backward.
  void forward(const Tensor& x_NH, const MoeRows& rows, double aux_scale, Tensor& y_NH,
               bool accumulate, MoeStash& stash) const;
  // Load-driven FSSDP: starts gathering this micro-batch's replicas before forward (the caller's
  // attention computes meanwhile); forward starts it itself otherwise. No-op without replicas.
  void start_expert_gather(MoeStash& stash) const;
  // dx (N,H) = d loss / d x, overwritten. dy must stay unchanged until backward_dw.
  void backward_dx(const Tensor& dy_NH, Tensor& dx_NH, MoeStash& stash) const;
  void backward_dw(MoeStash& stash) const;
  // FSSDP: backward_dw leaves the experts' gradient reduce-scatter in flight (the caller's
  // attention backward runs meanwhile); this completes it. No-op otherwise.
  void finish_backward_dw(MoeStash& stash) const;

  const Router& router() const { return router_; }
  bool has_shared_expert() const { return shared_ != nullptr; }
  // Load-driven FSSDP (parallel.fssdp_spare_slots > 0); null otherwise.
  ExpertReplicas* replicas() const { return replicas_.get(); }
  // Parameters one token touches: router, k experts, shared expert.
  int64_t active_parameter_count() const;

 private:
  const ParallelContext& ctx_;
  int64_t hidden_, experts_, topk_, ffn_;
  bool sequence_parallel_;  // x is this TP rank's token rows (TP > 1 with sequence parallelism)
  Router router_;
  Parameter* w_gate_;  // [E, F, H] global; local (E/EP, F/ETP, H), F/(ETP·EDP) under FSSDP
  Parameter* w_up_;    // [E, F, H] global; local (E/EP, F/ETP, H), F/(ETP·EDP) under FSSDP
  Parameter* w_down_;  // [E, H, F] global; local (E/EP, H, F/ETP), F/(ETP·EDP) under FSSDP
  std::unique_ptr<Mlp> shared_;
  int64_t local_experts_, local_ffn_;  // E/EP, F/ETP (materialised)
  TokenDispatcher dispatcher_;
  std::shared_ptr<ExpertWorkspace> workspace_;  // FSSDP only
  std::unique_ptr<ExpertReplicas> replicas_;    // load-driven FSSDP only

  // The weights the experts compute with: the parameters, or the FSSDP workspace.
  // The local experts' weights (El,F,H) (El,F,H) (El,H,F); under FSSDP the n the micro-batch
  // materialised (n,F,H) (n,F,H) (n,H,F); the micro-batch's slots (S_me,F,H) (S_me,F,H) (S_me,H,F) under load-driven FSSDP.
  const Tensor& gate_weights(const MoeStash& stash) const;
  const Tensor& up_weights(const MoeStash& stash) const;
  const Tensor& down_weights(const MoeStash& stash) const;
  // Load-driven FSSDP: route the router's choices to slots and plan their dispatch.
  void plan_replica_dispatch(int64_t rows, MoeStash& stash) const;
  // The rows [first, end) of one dispatched chunk and its per-expert offsets (El+1).
  struct ChunkRows {
    int64_t first, end;
    std::span<const int64_t> offsets;
    Tensor of(const Tensor& rows) const { return rows.slice_rows(first, end); }
  };
  ChunkRows chunk_rows(const MoeStash& stash, int chunk) const;
  std::vector<ShardPart> shard_parts(bool gradients) const;
  // FSSDP: agree on the needed local experts and start gathering them (forward), gather them
  // again (backward), unpack the gathered shards, reduce-scatter the gradients.
  void plan_materialisation(MoeStash& stash) const;
  void start_materialisation(MoeStash& stash) const;
  void finish_materialisation(const MoeStash& stash) const;
  void start_gradient_reduction(const MoeStash& stash) const;
  // Copies between an (EDP, n, s) exchange layout and materialised tensors of its dtype.
  void move_shards(const MoeStash& stash, bool to_materialised, const Tensor& exchange,
                   const Tensor& gate, const Tensor& up, const Tensor& down) const;

  // Whether TP ranks hold the same rows and split the routing between them.
  bool splits_rows() const { return ctx_.tp->size() > 1 && !sequence_parallel_; }
  void experts_forward(int chunk, MoeStash& stash) const;
  void gather_token_shares(const Tensor& share_nH, int64_t N, Tensor& all_NH) const;
  void experts_backward_dx(int chunk, MoeStash& stash) const;
};

}  // namespace moefold
