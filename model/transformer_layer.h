// One transformer layer of MODEL.md on the residual stream:
//   h_mid = h_in + attention(rmsnorm(h_in, attn_norm))
//   h_out = h_mid + (moe or mlp)(rmsnorm(h_mid, ffn_norm))
#pragma once

#include <cstdint>
#include <memory>

#include "model/attention.h"
#include "model/mlp.h"
#include "model/model_config.h"
#include "model/moe_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

struct TransformerLayerStash {
  Tensor h_in;       // (N,H) residual input (the attention norm's input)
  Tensor a;          // (N,H) rmsnorm(h_in)
  Tensor attn_rstd;  // (N)
  Tensor h_mid;      // (N,H) residual after attention (the FFN norm's input)
  Tensor m;          // (N,H) rmsnorm(h_mid)
  Tensor ffn_rstd;   // (N)
  Tensor d_norm;     // (N,H) gradient of a norm's output
  AttentionStash attn;
  MlpStash mlp;  // dense layers
  MoeStash moe;  // MoE layers
};

class TransformerLayer {
 public:
  TransformerLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                   ParameterRegistry& registry);

  // h_out (N,H) from h_in (N,H); both are kept by reference in the stash (h_in as h_in).
  void forward(const Tensor& h_in_NH, const int32_t* positions_N, int64_t batch, int64_t seq,
               double aux_scale, Tensor& h_out_NH, TransformerLayerStash& stash) const;
  // dh (N,H): in, d loss / d h_out; out, d loss / d h_in (updated in place). Accumulates every
  // parameter gradient of the layer.
  void backward(Tensor& dh_NH, const int32_t* positions_N, TransformerLayerStash& stash) const;

  int layer() const { return layer_; }
  bool is_moe() const { return moe_ != nullptr; }
  const MoeLayer* moe() const { return moe_.get(); }
  int64_t active_parameter_count() const;

 private:
  const ParallelContext& ctx_;
  int layer_;
  int64_t hidden_;
  float eps_;
  Parameter* attn_norm_;  // [H]
  Parameter* ffn_norm_;   // [H]
  Attention attention_;
  std::unique_ptr<Mlp> mlp_;
  std::unique_ptr<MoeLayer> moe_;
  int64_t attention_parameters_;
};

}  // namespace moefold
