// One transformer layer of MODEL.md on the residual stream:
//   h_mid = h_in + attention(rmsnorm(h_in, attn_norm))
//   h_out = h_mid + (moe or mlp)(rmsnorm(h_mid, ffn_norm))
// Tensor parallel: attention and the dense MLP are TP layers (attention.h, mlp.h). With sequence
// parallelism the residual stream and the norms hold this rank's n = N/TP token rows, and the
// norm weights' gradients are summed over TP. The MoE layer takes the rank's rows of its
// context-parallel shard (under sequence parallelism its own token rows, with no gather); each
// TP rank routes its own tokens to the experts (folded over ETP×EP×EDP, moe_layer.h), with
// routing, capacity and the balance losses taken over the whole micro-batch, as on a single
// process.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

#include "model/attention.h"
#include "model/mlp.h"
#include "model/model_config.h"
#include "model/moe_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/tp_communication.h"
#include "tensor/tensor.h"

namespace moefold {

// n = N/TP token rows under sequence parallelism, N otherwise.
struct TransformerLayerStash {
  Tensor h_in;       // (n,H) residual input (the attention norm's input)
  Tensor a;          // (n,H) rmsnorm(h_in)
  Tensor attn_rstd;  // (n)
  Tensor h_mid;      // (n,H) residual after attention (the FFN norm's input)
  Tensor m;          // (n,H) rmsnorm(h_mid)
  Tensor ffn_rstd;   // (n)
  Tensor d_norm;     // (n,H) gradient of a norm's output
  Tensor norm_dw;    // (H) one micro-batch's norm-weight gradient before the TP sum (SP only)
  Tensor ffn_dy, attn_dy;  // (n,H) the blocks' output gradients, kept for deferred backward_dw
  AttentionStash attn;
  MlpStash mlp;  // dense layers
  MoeStash moe;  // MoE layers
};

class TransformerLayer {
 public:
  // expert_workspace: the model's shared FSSDP workspace (moe_layer.h); null: the layer's own.
  TransformerLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                   ParameterRegistry& registry,
                   std::shared_ptr<ExpertWorkspace> expert_workspace = nullptr);

  // h_out (n,H) from h_in (n,H); both are kept by reference in the stash (h_in as h_in).
  // positions_N covers all N = batch·seq tokens.
  void forward(const Tensor& h_in_NH, const int32_t* positions_N, int64_t batch, int64_t seq,
               double aux_scale, Tensor& h_out_NH, TransformerLayerStash& stash) const;
  // dh (n,H): in, d loss / d h_out; out, d loss / d h_in (updated in place). Accumulates every
  // parameter gradient of the layer: backward_dx then backward_dw.
  void backward(Tensor& dh_NH, const int32_t* positions_N, TransformerLayerStash& stash) const;
  // The two halves, for schedules that defer weight gradients (zero-bubble pipelines): dx (and
  // the cheap norm-weight gradients; with TP the other weight gradients too, computed under the
  // TP reductions), then the remaining weight gradients from the stash.
  void backward_dx(Tensor& dh_NH, const int32_t* positions_N, TransformerLayerStash& stash) const;
  void backward_dw(TransformerLayerStash& stash) const;

  int layer() const { return layer_; }
  bool is_moe() const { return moe_ != nullptr; }
  const MoeLayer* moe() const { return moe_.get(); }
  int64_t active_parameter_count() const;

 private:
  void backward_blocks(Tensor& dh_NH, const int32_t* positions_N, TransformerLayerStash& stash,
                       bool defer) const;

  const ParallelContext& ctx_;
  TpRegion region_;
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

// The tensor/sequence-parallel limits of the layers above (part of Model::validate): heads,
// query groups, the padded vocabulary and the dense/shared FFN sizes divisible by TP; with
// sequence parallelism seq_length divisible by TP.
absl::Status validate_tensor_parallel(const ModelConfig& config, const ParallelContext& ctx);

}  // namespace moefold
