#include "model/transformer_layer.h"

#include "absl/strings/str_cat.h"
#include <string>

#include "model/norm_backward.h"
#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

// Registration order (= Model::parameters() order): attn_norm, attn/*, ffn_norm, mlp|moe.
TransformerLayer::TransformerLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                                   ParameterRegistry& registry,
                                   std::shared_ptr<ExpertWorkspace> expert_workspace)
    : ctx_(ctx),
      region_{ctx.tp.get(), ctx.config.sequence_parallel},
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
    moe_ = std::make_unique<MoeLayer>(config, ctx, layer, registry, std::move(expert_workspace));
  } else {
    mlp_ = std::make_unique<Mlp>(config, ctx, prefix + "mlp/", config.ffn_hidden_size, registry,
                                 region_.sharded());
  }
  const int64_t q = static_cast<int64_t>(config.num_attention_heads) * config.head_dim();
  const int64_t kv = static_cast<int64_t>(config.kv_heads()) * config.head_dim();
  attention_parameters_ = 2 * hidden_ * q + 2 * hidden_ * kv +
                          (config.qk_layernorm ? 2 * config.head_dim() : 0);
}

void TransformerLayer::forward(const Tensor& h_in_NH, const int32_t* positions_N, int64_t batch,
                               int64_t seq, double aux_scale, Tensor& h_out_NH,
                               TransformerLayerStash& st) const {
  const int64_t n = region_.local_rows(batch * seq), H = hidden_;
  MOEFOLD_CHECK(h_in_NH.numel() == n * H && h_out_NH.numel() == n * H);
  st.h_in = h_in_NH;
  const DType act = h_in_NH.dtype();
  ensure_shape(st.a, {n, H}, act);
  ensure_shape(st.attn_rstd, {n});
  ensure_shape(st.h_mid, {n, H}, act);
  ensure_shape(st.m, {n, H}, act);
  ensure_shape(st.ffn_rstd, {n});

  if (moe_) moe_->start_expert_gather(st.moe);  // load-driven FSSDP: behind the attention
  ops::rmsnorm_forward(h_in_NH, attn_norm_->compute_value(), st.a, st.attn_rstd, eps_);
  ops::copy(st.h_mid, h_in_NH);
  attention_.forward(st.a, positions_N, batch, seq, st.h_mid, true, st.attn);

  ops::rmsnorm_forward(st.h_mid, ffn_norm_->compute_value(), st.m, st.ffn_rstd, eps_);
  ops::copy(h_out_NH, st.h_mid);
  if (moe_) {
    // This rank's rows of its CP shard (seq = S/CP tokens of each sequence); under sequence
    // parallelism the MoE layer takes this rank's token rows as they are.
    moe_->forward(st.m, {batch, seq * ctx_.coords.cp_size, positions_N}, aux_scale, h_out_NH,
                  true, st.moe);
  } else {
    mlp_->forward(st.m, h_out_NH, true, st.mlp);
  }
}

void TransformerLayer::backward(Tensor& dh_NH, const int32_t* positions_N,
                                TransformerLayerStash& st) const {
  backward_blocks(dh_NH, positions_N, st, false);
}

void TransformerLayer::backward_dx(Tensor& dh_NH, const int32_t* positions_N,
                                   TransformerLayerStash& st) const {
  backward_blocks(dh_NH, positions_N, st, true);
}

// Each block's weight gradients right after its dx, or (defer) later in backward_dw: then the
// blocks read their output gradients from copies, since dh is updated in place meanwhile.
void TransformerLayer::backward_blocks(Tensor& dh_NH, const int32_t* positions_N,
                                       TransformerLayerStash& st, bool defer) const {
  const int64_t n = st.h_in.numel() / hidden_, H = hidden_;
  MOEFOLD_CHECK(dh_NH.numel() == n * H);
  ensure_shape(st.d_norm, {n, H}, dh_NH.dtype());
  const auto output_gradient = [&](Tensor& copy) -> const Tensor& {
    if (!defer) return dh_NH;
    ops::copy(ensure_shape(copy, {n, H}, dh_NH.dtype()), dh_NH);
    return copy;
  };
  // FFN block: dh is d/d h_out; the residual passes it through, the norm adds its part.
  const Tensor& ffn_dy = output_gradient(st.ffn_dy);
  if (moe_) {
    moe_->backward_dx(ffn_dy, st.d_norm, st.moe);
    if (!defer) moe_->backward_dw(st.moe);
  } else {
    mlp_->backward_dx(ffn_dy, st.d_norm, false, st.mlp);
    if (!defer) mlp_->backward_dw(st.mlp);
  }
  rmsnorm_backward_summed(region_.sequence_group(), st.d_norm, st.h_mid, *ffn_norm_,
                          st.ffn_rstd, dh_NH, st.norm_dw, true);
  // Attention block: dh is now d/d h_mid.
  const Tensor& attn_dy = output_gradient(st.attn_dy);
  attention_.backward_dx(attn_dy, positions_N, st.d_norm, st.attn);
  if (!defer) attention_.backward_dw(st.attn);
  rmsnorm_backward_summed(region_.sequence_group(), st.d_norm, st.h_in, *attn_norm_,
                          st.attn_rstd, dh_NH, st.norm_dw, true);
  if (!defer && moe_) moe_->finish_backward_dw(st.moe);  // FSSDP: overlapped the attention
}

void TransformerLayer::backward_dw(TransformerLayerStash& st) const {
  if (moe_) {
    moe_->backward_dw(st.moe);
  } else {
    mlp_->backward_dw(st.mlp);
  }
  attention_.backward_dw(st.attn);  // FSSDP: the experts' reduce-scatter meanwhile
  if (moe_) moe_->finish_backward_dw(st.moe);
}

int64_t TransformerLayer::active_parameter_count() const {
  const int64_t ffn = moe_ ? moe_->active_parameter_count() : mlp_->parameter_count();
  return 2 * hidden_ + attention_parameters_ + ffn;
}

absl::Status validate_tensor_parallel(const ModelConfig& c, const ParallelContext& ctx) {
  const RankCoordinates& r = ctx.coords;
  const int tp = r.tp_size;
  if (tp == 1) return absl::OkStatus();
  auto not_divisible = [tp](const char* key, int64_t value) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, " ", value, " is not divisible by tensor_model_parallel_size ", tp));
  };
  if (c.num_attention_heads % tp != 0) return not_divisible("num_attention_heads", c.num_attention_heads);
  if (c.kv_heads() % tp != 0) return not_divisible("num_query_groups", c.kv_heads());
  if (c.padded_vocab_size() % tp != 0) {
    return not_divisible("padded vocabulary size", c.padded_vocab_size());
  }
  bool any_dense = false, any_moe = false;
  for (int l = 0; l < c.num_layers; ++l) (c.is_moe_layer(l) ? any_moe : any_dense) = true;
  if (any_dense && c.ffn_hidden_size % tp != 0) {
    return not_divisible("ffn_hidden_size", c.ffn_hidden_size);
  }
  if (any_moe && c.moe.moe_shared_expert_intermediate_size % tp != 0) {
    return not_divisible("moe_shared_expert_intermediate_size",
                         c.moe.moe_shared_expert_intermediate_size);
  }
  if (ctx.config.sequence_parallel && c.seq_length % tp != 0) {
    return not_divisible("seq_length (sequence_parallel)", c.seq_length);
  }
  return absl::OkStatus();
}

}  // namespace moefold
