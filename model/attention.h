// Self-attention of MODEL.md on the normalised residual a (the RMSNorm lives in the transformer
// layer): q/k/v projections, RoPE, causal GQA attention, output projection added to y. With
// model.qk_layernorm each query and key head is RMS-normalised (weights q_norm, k_norm [d],
// shared by all heads) between its projection and RoPE, as Qwen3 and Megatron's --qk-layernorm:
//   q = rope(rmsnorm(a Wqᵀ per head, q_norm)),  k = rope(rmsnorm(a Wkᵀ per head, k_norm)).
// Tensor parallel (sharding_plan.h): Wq/Wk/Wv column-parallel by heads (each TP rank holds
// nh/TP query heads and the nkv/TP key/value heads they use), Wo row-parallel. a and y are in the
// residual layout of TpRegion: n = N/TP token rows under sequence parallelism, N otherwise.
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/tp_communication.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace moefold {

// Activations of one micro-batch, kept from forward to backward. N = B·S.
// Head counts below are this rank's: nh = heads/TP, nkv = query groups/TP.
struct AttentionStash {
  int64_t batch = 0, seq = 0;
  Tensor a;    // (N,H) input of all tokens: the caller's a, or gathered under sequence parallelism
  Tensor q;    // (B,S,nh,d) after RoPE
  Tensor k;    // (B,S,nkv,d) after RoPE
  Tensor q_raw, k_raw;    // qk_layernorm: the projections before the norm
  Tensor q_rstd, k_rstd;  // qk_layernorm: (B·S·nh), (B·S·nkv)
  Tensor v;    // (B,S,nkv,d)
  Tensor o;    // (B,S,nh·d) attention output before Wo
  Tensor lse;  // (B,nh,S) log-sum-exp of the scores; (B,2,nh,S/2) under CP (ring_attention.h)
  // Gradients handed from backward_dx to backward_dw.
  Tensor dy;               // (N,H) the caller's dy, or gathered under sequence parallelism
  Tensor d_o, dq, dk, dv;  // as o, q, k, v; dq, dk before the q/k norms once backward_dx is done
  Tensor dq_normed, dk_normed;  // qk_layernorm: the gradients of the q/k norms' outputs
  Tensor norm_dw;          // qk_layernorm under TP: (d) a norm weight's partial gradient
  Tensor y_full, da_full;  // (N,H) partial sums over this rank's heads (TP > 1 only)
  Tensor shard;            // (n,H) scratch of the TP exit/entry
};

class Attention {
 public:
  Attention(const ModelConfig& config, const ParallelContext& ctx, int layer,
            ParameterRegistry& registry);

  // y (n,H) = (accumulate ? y : 0) + attention(a) Woᵀ, a (n,H). positions_N: each of the N
  // tokens' position in its sequence (rope); the first S entries are those of one sequence.
  // Under context parallelism seq is this rank's shard S/CP (context_shard.h), positions are
  // global and the attention runs over the CP ring (ring_attention.h).
  void forward(const Tensor& a_NH, const int32_t* positions_N, int64_t batch, int64_t seq,
               Tensor& y_NH, bool accumulate, AttentionStash& stash) const;
  // da (n,H) = d loss / d a (overwritten). dy must stay unchanged until backward_dw. With TP
  // the weight gradients are accumulated here, while da's TP reduction is in flight, and
  // backward_dw has nothing left to do.
  void backward_dx(const Tensor& dy_NH, const int32_t* positions_N, Tensor& da_NH,
                   AttentionStash& stash) const;
  // Accumulates dWq, dWk, dWv, dWo (the q/k norm weights are done in backward_dx).
  void backward_dw(AttentionStash& stash) const;

 private:
  const ParallelContext& ctx_;
  TpRegion region_;
  int64_t hidden_, heads_, kv_heads_, head_dim_;  // heads_, kv_heads_: this rank's
  float rotary_base_;
  Parameter* wq_;  // [nh·d, H] local rows
  Parameter* wk_;  // [nkv·d, H]
  Parameter* wv_;  // [nkv·d, H]
  Parameter* wo_;  // [H, nh·d] local columns
  Parameter* q_norm_ = nullptr;  // [d], qk_layernorm only
  Parameter* k_norm_ = nullptr;  // [d]
  float eps_;

  ops::AttentionShape shape(int64_t batch, int64_t seq) const;  // one sequence, no CP
  void weight_gradients(AttentionStash& stash) const;
  // grad_raw = the gradient w.r.t. a q/k projection from grad_normed, w.r.t. its norm's output;
  // the norm weight's gradient (summed over TP: each rank saw its heads) is added to its grad.
  void norm_heads_backward(const Parameter& norm, const Tensor& raw, const Tensor& rstd,
                           const Tensor& grad_normed, const Tensor& grad_raw,
                           AttentionStash& stash) const;
};

}  // namespace moefold
