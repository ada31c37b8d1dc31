// Self-attention of MODEL.md on the normalised residual a (the RMSNorm lives in the transformer
// layer): q/k/v projections, RoPE, causal GQA attention, output projection added to y.
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

// Activations of one micro-batch, kept from forward to backward. N = B·S.
struct AttentionStash {
  int64_t batch = 0, seq = 0;
  Tensor a;    // (N,H) input, shared with the caller
  Tensor q;    // (B,S,nh,d) after RoPE
  Tensor k;    // (B,S,nkv,d) after RoPE
  Tensor v;    // (B,S,nkv,d)
  Tensor o;    // (B,S,nh·d) attention output before Wo
  Tensor lse;  // (B,nh,S) log-sum-exp of the scores
  // Gradients handed from backward_dx to backward_dw.
  Tensor dy;               // (N,H) shared with the caller
  Tensor d_o, dq, dk, dv;  // as o, q, k, v
};

class Attention {
 public:
  Attention(const ModelConfig& config, const ParallelContext& ctx, int layer,
            ParameterRegistry& registry);

  // y (N,H) = (accumulate ? y : 0) + attention(a) Woᵀ. positions_N: each token's position in
  // its sequence (rope); the first S entries are the positions of one sequence.
  void forward(const Tensor& a_NH, const int32_t* positions_N, int64_t batch, int64_t seq,
               Tensor& y_NH, bool accumulate, AttentionStash& stash) const;
  // da (N,H) = d loss / d a (overwritten). dy must stay unchanged until backward_dw.
  void backward_dx(const Tensor& dy_NH, const int32_t* positions_N, Tensor& da_NH,
                   AttentionStash& stash) const;
  // Accumulates dWq, dWk, dWv, dWo.
  void backward_dw(AttentionStash& stash) const;

 private:
  const ParallelContext& ctx_;
  int64_t hidden_, heads_, kv_heads_, head_dim_;
  float rotary_base_;
  Parameter* wq_;  // [nh·d, H]
  Parameter* wk_;  // [nkv·d, H]
  Parameter* wv_;  // [nkv·d, H]
  Parameter* wo_;  // [H, nh·d]
};

}  // namespace moefold
