// The MoE router of MODEL.md: logits z = x Wrᵀ, scores, top-k choice (softmax post/pre, sigmoid
// with expert bias, group-limited), gate weights (with scaling factor), capacity keep-mask, and
// the balance (aux_loss / seq_aux_loss) and z losses with their exact gradients into z.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

// N = B·S tokens in the micro-batch; this rank routes n of them (n = N unless the micro-batch's
// tokens are split over the TP×CP group, see Router::forward). The router's GEMMs run on the
// compute device; the routing decision (scores, top-k, gates, capacity, losses) is made in
// float32 on the host (MODEL.md), so the (n,E) and (n,k) tensors below are host tensors. On the
// CPU backend the device and host tensors share storage.
struct RouterStash {
  int64_t batch = 0, seq = 0;
  int64_t rows = 0;                 // n
  std::vector<int64_t> tokens;      // (n) index b·S + s in the micro-batch of each routed row
  Tensor x;                         // (n,H) input, shared with the caller
  Tensor device_logits;             // (n,E) z on the compute device
  Tensor logits;                    // (n,E) z (host)
  Tensor probs;                     // (n,E) softmax(z) (softmax) or σ(z) (sigmoid)
  Tensor select;                    // (n,E) scratch: scores used to choose experts
  std::vector<int32_t> idx;         // (n,k) chosen experts, best first
  Tensor gates;                     // (n,k) g, scaling factor applied (host)
  Tensor device_gates;              // (n,k) g on the compute device, for the combine
  std::vector<uint8_t> keep;        // (n,k) 1 = kept after capacity (all 1 when dropless)
  Tensor lse;                       // (n) logsumexp(z), for the z-loss (host)
  std::vector<int64_t> counts;      // (E) this rank's rows choosing e (before dropping)
  std::vector<int64_t> total_counts;      // (E) the same over the whole micro-batch
  std::vector<int64_t> total_seq_counts;  // (B,E) the same per sequence (seq_aux_loss)
  int64_t dropped = 0;              // this rank's assignments dropped by capacity
  double aux_loss = 0;              // balance loss, coeff applied
  double z_loss = 0;                // z-loss, coeff applied
  Tensor dlogits;                   // (n,E) d loss / d z (host)
  Tensor device_dlogits;            // (n,E) the same on the compute device, for backward_dw
  Tensor dweight;                   // (E,H) scratch: this rank's part of dWr (TP > 1 only)
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
  void choose_experts(int64_t N, RouterStash& st) const;
  void compute_gates(int64_t N, RouterStash& st) const;
  void apply_capacity(RouterStash& st) const;
  void compute_losses(RouterStash& st) const;
  // d (balance + z) / d z, times `scale`, added to dscore (d/d probs) and dz.
  void loss_gradients(double scale, RouterStash& st, float* dscore_NE, float* dz_NE) const;

  const ParallelContext& ctx_;
  MoeConfig moe_;
  int64_t hidden_, experts_, topk_;
  Parameter* weight_;              // [E, H]
  Buffer* expert_bias_ = nullptr;  // [E]
};

}  // namespace moefold
