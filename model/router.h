// The MoE router of MODEL.md: logits z = x Wrᵀ, scores, top-k choice (softmax post/pre, sigmoid
// with expert bias, group-limited), gate weights (with scaling factor), capacity keep-mask, and
// the balance (aux_loss / seq_aux_loss) and z losses with their exact gradients into z.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/ops.h"
#include "tensor/router_math.h"
#include "tensor/tensor.h"

namespace moefold {

// N = B·S tokens in the micro-batch; this rank routes n of them (n = N unless the micro-batch's
// tokens are split over the TP×CP group, see Router::forward). The routing itself (scores,
// top-k, gates, log-sum-exp, the balance statistics and the backward) runs on the compute
// device (tensor/router_math.h), in float32 (MODEL.md). Per forward the host waits once, for
// one device→host copy of `record`'s head: the load sums and idx, plus the gates when capacity
// is on. From idx the host takes the token counts (the dispatcher's and the balance loss's),
// the capacity decision and the losses; the backward copies nothing to the host (the backend
// uploads the counts, the row groups and, under capacity, keep). On the CPU backend device and
// host tensors share storage and the copy is none.
struct RouterStash {
  int64_t batch = 0, seq = 0;
  int64_t rows = 0;                 // n
  std::vector<int64_t> tokens;      // (n) index b·S + s in the micro-batch of each routed row
  std::vector<int32_t> row_group;   // (n) sequence b of each row (seq_aux_loss only, else empty)
  Tensor x;                         // (n,H) input, shared with the caller
  Tensor logits;                    // (n,E) z (device)
  Tensor probs;                     // (n,E) softmax(z) (softmax) or σ(z) (sigmoid) (device)
  Tensor lse;                       // (n) logsumexp(z), for the z-loss (device; z-loss only)
  // (device) 4-byte words: [load sums: S float64 (Σ_t P per group and expert, then Σ lse²;
  // S = 0 without balance and z losses)][idx: (n,k) int32][gates: (n,k) float32].
  Tensor record;
  Tensor gates;                     // (n,k) g, scaling factor applied: record's tail (device)
  Tensor device_gates;              // the same tensor (the combine's name for it)
  std::vector<int32_t> idx;         // (n,k) chosen experts, best first (host copy)
  std::vector<uint8_t> keep;        // (n,k) 1 = kept after capacity (all 1 when dropless)
  std::vector<int64_t> counts;      // (E) this rank's rows choosing e (before dropping)
  std::vector<int64_t> total_counts;      // (E) the same over the whole micro-batch
  std::vector<int64_t> total_seq_counts;  // (B,E) the same per sequence (seq_aux_loss)
  int64_t dropped = 0;              // this rank's assignments dropped by capacity
  double aux_loss = 0;              // balance loss, coeff applied
  double z_loss = 0;                // z-loss, coeff applied
  Tensor dlogits;                   // (n,E) d loss / d z (device), for backward_dw
  Tensor dweight;                   // (E,H) scratch: this rank's part of dWr (TP > 1 only)
  ops::HostCopy routed;             // record's head on its way to the host (start_forward)
};

// Aux-loss-free balancing (MODEL.md): b_e ← b_e + rate · sign(c̄ − c_e), with c_e the tokens
// routed to e over the whole global batch (already summed over micro-batches and ranks) and
// c̄ = mean_e c_e. bias (E) float32.
void update_expert_bias(const std::vector<int64_t>& counts_E, float rate, float* bias_E);

class Router {
 public:
  Router(const ModelConfig& config, const ParallelContext& ctx, int layer,
         ParameterRegistry& registry);

  // Routes the N = B·S tokens of x (N,H) in order: fills every forward field of the stash.
  void forward(const Tensor& x_NH, int64_t batch, int64_t seq, RouterStash& stash) const;
  // Routes the micro-batch tokens `tokens` (indices b·S + s, any order), x (n,H), when the
  // micro-batch's tokens are split over ctx.tp_cp (context-parallel shards, and within them each
  // attention-side TP rank's share: MoE Parallel Folding). The statistics of the balance and z
  // losses and the capacity decision are taken over the whole micro-batch (collectives over
  // tp_cp), in token order, so every number equals one process's.
  void forward(const Tensor& x_nH, int64_t batch, int64_t seq, std::vector<int64_t> tokens,
               RouterStash& stash) const;
  // The same in two halves: the device's part and the start of its copy to the host, then the
  // host's wait and part; the device can run work issued in between while the host waits.
  void start_forward(const Tensor& x_nH, int64_t batch, int64_t seq, std::vector<int64_t> tokens,
                     RouterStash& stash) const;
  void finish_forward(RouterStash& stash) const;
  // d loss / d z from dgates (n,k) (d loss / d g; entries of dropped assignments are ignored)
  // plus aux_scale · (balance + z losses); then dx (n,H) = dz Wr, overwritten or added.
  void backward_dx(const Tensor& dgates_NK, double aux_scale, Tensor& dx_NH, bool accumulate,
                   RouterStash& stash) const;
  // dWr += dzᵀ x, summed over TP when the rows are split over it; the context-parallel parts
  // are summed with the other dense gradients over DP×CP.
  void backward_dw(RouterStash& stash) const;

  Parameter* weight() const { return weight_; }
  Buffer* expert_bias() const { return expert_bias_; }  // null unless enabled

 private:
  RouterRowConfig row_config() const;
  bool balance_loss() const;  // a balance loss with a non-zero coefficient
  bool per_sequence() const;  // ... computed per sequence (seq_aux_loss)
  bool z_loss() const;
  // The record's words before idx (the load sums), and idx on the device.
  int64_t sum_count(const RouterStash& st) const;
  int32_t* device_idx(const RouterStash& st) const;
  ops::HostCopy route_on_device(const Tensor& x_nH, bool with_gates, RouterStash& st) const;
  void apply_capacity(RouterStash& st, const float* gates_nk) const;
  void compute_losses(RouterStash& st, std::vector<double> sums) const;

  const ParallelContext& ctx_;
  MoeConfig moe_;
  int64_t hidden_, experts_, topk_;
  Parameter* weight_;              // [E, H]
  Buffer* expert_bias_ = nullptr;  // [E]
};

}  // namespace moefold
