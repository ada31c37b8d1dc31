#include "model/transformer_layer.h"

#include <cstring>
#include <string>

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/rmsnorm.h"

namespace moefold {

// Registration order (= Model::parameters() order): attn_norm, attn/*, ffn_norm, mlp|moe.
TransformerLayer::TransformerLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                                   ParameterRegistry& registry)
    : ctx_(ctx),
      layer_(layer),
      hidden_(config.hidden_size),
      eps_(config.norm_epsilon),
      attn_norm_(registry.add_norm(shard_layout("layers/" + std::to_string(layer) + "/attn_norm",
                                                {config.hidden_size}, ctx.coords))),
      ffn_norm_(nullptr),
      attention_(config, ctx, layer, registry) {
  const std::string prefix = "layers/" + std::to_string(layer) + "/";
  ffn_norm_ = registry.add_norm(shard_layout(prefix + "ffn_norm", {hidden_}, ctx.coords));
  if (config.is_moe_layer(layer)) {
    moe_ = std::make_unique<MoeLayer>(config, ctx, layer, registry);
  } else {
    mlp_ = std::make_unique<Mlp>(config, ctx, prefix + "mlp/", config.ffn_hidden_size, registry);
  }
  const int64_t q = static_cast<int64_t>(config.num_attention_heads) * config.head_dim();
  const int64_t kv = static_cast<int64_t>(config.kv_heads()) * config.head_dim();
  attention_parameters_ = 2 * hidden_ * q + 2 * hidden_ * kv;
}

void TransformerLayer::forward(const Tensor& h_in_NH, const int32_t* positions_N, int64_t batch,
                               int64_t seq, double aux_scale, Tensor& h_out_NH,
                               TransformerLayerStash& st) const {
  const int64_t N = batch * seq, H = hidden_;
  MOEFOLD_CHECK(h_in_NH.numel() == N * H && h_out_NH.numel() == N * H);
  st.h_in = h_in_NH;
  ensure_shape(st.a, {N, H});
  ensure_shape(st.attn_rstd, {N});
  ensure_shape(st.h_mid, {N, H});
  ensure_shape(st.m, {N, H});
  ensure_shape(st.ffn_rstd, {N});

  cpu::rmsnorm_forward(h_in_NH.data(), attn_norm_->value.data(), st.a.data(), st.attn_rstd.data(),
                       N, H, eps_);
  std::memcpy(st.h_mid.data(), h_in_NH.data(), N * H * sizeof(float));
  attention_.forward(st.a, positions_N, batch, seq, st.h_mid, true, st.attn);

  cpu::rmsnorm_forward(st.h_mid.data(), ffn_norm_->value.data(), st.m.data(), st.ffn_rstd.data(), N,
                       H, eps_);
  std::memcpy(h_out_NH.data(), st.h_mid.data(), N * H * sizeof(float));
  if (moe_) {
    moe_->forward(st.m, batch, seq, aux_scale, h_out_NH, true, st.moe);
  } else {
    mlp_->forward(st.m, h_out_NH, true, st.mlp);
  }
}

void TransformerLayer::backward(Tensor& dh_NH, const int32_t* positions_N,
                                TransformerLayerStash& st) const {
  const int64_t N = st.h_in.numel() / hidden_, H = hidden_;
  MOEFOLD_CHECK(dh_NH.numel() == N * H);
  ensure_shape(st.d_norm, {N, H});
  // FFN block: dh is d/d h_out; the residual passes it through, the norm adds its part.
  if (moe_) {
    moe_->backward_dx(dh_NH, st.d_norm, st.moe);
    moe_->backward_dw(st.moe);
  } else {
    mlp_->backward_dx(dh_NH, st.d_norm, false, st.mlp);
    mlp_->backward_dw(st.mlp);
  }
  cpu::rmsnorm_backward(st.d_norm.data(), st.h_mid.data(), ffn_norm_->value.data(),
                        st.ffn_rstd.data(), dh_NH.data(), ffn_norm_->grad.data(), N, H, true);
  // Attention block: dh is now d/d h_mid.
  attention_.backward_dx(dh_NH, positions_N, st.d_norm, st.attn);
  attention_.backward_dw(st.attn);
  cpu::rmsnorm_backward(st.d_norm.data(), st.h_in.data(), attn_norm_->value.data(),
                        st.attn_rstd.data(), dh_NH.data(), attn_norm_->grad.data(), N, H, true);
}

int64_t TransformerLayer::active_parameter_count() const {
  const int64_t ffn = moe_ ? moe_->active_parameter_count() : mlp_->parameter_count();
  return 2 * hidden_ + attention_parameters_ + ffn;
}

}  // namespace moefold
