#include "model/attention.h"

#include <cmath>
#include <string>

#include "model/norm_backward.h"
#include "model/ring_attention.h"
#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

Attention::Attention(const ModelConfig& config, const ParallelContext& ctx, int layer,
                     ParameterRegistry& registry)
    : ctx_(ctx),
      region_{ctx.tp.get(), ctx.config.sequence_parallel, ctx.config.tp_comm_overlap_chunks},
      hidden_(config.hidden_size),
      heads_(config.num_attention_heads),
      kv_heads_(config.kv_heads()),
      head_dim_(config.head_dim()),
      rotary_base_(config.rotary_base),
      eps_(config.norm_epsilon) {
  MOEFOLD_CHECK(heads_ % kv_heads_ == 0 && head_dim_ % 2 == 0);
  const int tp = ctx.coords.tp_size;
  MOEFOLD_CHECK(heads_ % tp == 0 && kv_heads_ % tp == 0,
                "heads " << heads_ << " and query groups " << kv_heads_ << " over TP " << tp);
  const std::string prefix = "layers/" + std::to_string(layer) + "/attn/";
  const float std = config.init_method_std;
  const float out_std = std / std::sqrt(2.0f * config.num_layers);
  // Global shapes; the plan splits the head rows (wq/wk/wv) and head columns (wo) over TP.
  const int64_t q_rows = heads_ * head_dim_, kv_rows = kv_heads_ * head_dim_;
  wq_ = registry.add_weight(shard_layout(prefix + "wq", {q_rows, hidden_}, ctx.coords), std);
  wk_ = registry.add_weight(shard_layout(prefix + "wk", {kv_rows, hidden_}, ctx.coords), std);
  wv_ = registry.add_weight(shard_layout(prefix + "wv", {kv_rows, hidden_}, ctx.coords), std);
  wo_ = registry.add_weight(shard_layout(prefix + "wo", {hidden_, q_rows}, ctx.coords), out_std);
  if (config.qk_layernorm) {
    q_norm_ = registry.add_norm(shard_layout(prefix + "q_norm", {head_dim_}, ctx.coords));
    k_norm_ = registry.add_norm(shard_layout(prefix + "k_norm", {head_dim_}, ctx.coords));
  }
  heads_ /= tp;
  kv_heads_ /= tp;
}

void Attention::forward(const Tensor& a_NH, const int32_t* positions_N, int64_t batch, int64_t seq,
                        Tensor& y_NH, bool accumulate, AttentionStash& st) const {
  const int64_t N = batch * seq, Q = heads_ * head_dim_, KV = kv_heads_ * head_dim_;
  const int64_t n = region_.local_rows(N);
  MOEFOLD_CHECK(a_NH.numel() == n * hidden_ && y_NH.numel() == n * hidden_);
  st.batch = batch;
  st.seq = seq;
  region_.enter_forward(a_NH, N, st.a);
  const DType act = a_NH.dtype();
  ensure_shape(st.q, {N, Q}, act);
  ensure_shape(st.k, {N, KV}, act);
  ensure_shape(st.v, {N, KV}, act);
  ensure_shape(st.o, {N, Q}, act);
  const bool ring = ctx_.coords.cp_size > 1;
  if (ring) {
    ensure_shape(st.lse, {batch, 2, heads_, seq / 2});
  } else {
    ensure_shape(st.lse, {batch, heads_, seq});
  }
  const std::span<const int32_t> positions(positions_N, N);
  // With the q/k norms the projections land in q_raw/k_raw, kept for the norms' backward.
  const Tensor& q_proj = q_norm_ ? ensure_shape(st.q_raw, {N, Q}, act) : st.q;
  const Tensor& k_proj = q_norm_ ? ensure_shape(st.k_raw, {N, KV}, act) : st.k;
  ops::linear_forward(st.a, wq_->compute_value(), q_proj);
  ops::linear_forward(st.a, wk_->compute_value(), k_proj);
  ops::linear_forward(st.a, wv_->compute_value(), st.v);
  if (q_norm_) {
    ops::rmsnorm_forward(st.q_raw, q_norm_->compute_value(), st.q,
                         ensure_shape(st.q_rstd, {N * heads_}), eps_);
    ops::rmsnorm_forward(st.k_raw, k_norm_->compute_value(), st.k,
                         ensure_shape(st.k_rstd, {N * kv_heads_}), eps_);
  }
  ops::rope_forward(st.q, st.q, positions, heads_, head_dim_, rotary_base_);
  ops::rope_forward(st.k, st.k, positions, kv_heads_, head_dim_, rotary_base_);
  if (ring) {
    ring_attention_forward(*ctx_.cp, {batch, seq, heads_, kv_heads_, head_dim_}, st.q, st.k, st.v,
                           st.o, st.lse);
  } else {
    ops::attention_forward(st.q, st.k, st.v, st.o, st.lse, positions.first(seq),
                           positions.first(seq), shape(batch, seq));
  }
  if (!region_.active()) {
    ops::linear_forward(st.o, wo_->compute_value(), y_NH, accumulate);
    return;
  }
  const auto partial = [&](int64_t first, int64_t rows, const Tensor& out) {
    ops::linear_forward(st.o.slice_rows(first, first + rows), wo_->compute_value(), out);
  };
  region_.exit_forward_overlapped(N, partial, st.y_full, y_NH, accumulate, st.shard);
}

void Attention::backward_dx(const Tensor& dy_NH, const int32_t* positions_N, Tensor& da_NH,
                            AttentionStash& st) const {
  const int64_t B = st.batch, S = st.seq, N = B * S;
  const int64_t Q = heads_ * head_dim_, KV = kv_heads_ * head_dim_;
  const int64_t n = region_.local_rows(N);
  MOEFOLD_CHECK(dy_NH.numel() == n * hidden_ && da_NH.numel() == n * hidden_);
  region_.exit_backward(dy_NH, N, st.dy);
  const DType act = dy_NH.dtype();
  ensure_shape(st.d_o, {N, Q}, act);
  ensure_shape(st.dq, {N, Q}, act).zero();
  ensure_shape(st.dk, {N, KV}, act).zero();
  ensure_shape(st.dv, {N, KV}, act).zero();
  const std::span<const int32_t> positions(positions_N, N);
  ops::linear_backward_dx(st.dy, wo_->compute_value(), st.d_o, false);
  if (ctx_.coords.cp_size > 1) {
    ring_attention_backward(*ctx_.cp, {B, S, heads_, kv_heads_, head_dim_}, st.d_o, st.q, st.k,
                            st.v, st.o, st.lse, st.dq, st.dk, st.dv);
  } else {
    ops::attention_backward(st.d_o, st.q, st.k, st.v, st.o, st.lse, st.dq, st.dk, st.dv,
                            positions.first(S), positions.first(S), shape(B, S));
  }
  if (q_norm_) {
    ops::rope_backward(st.dq, ensure_shape(st.dq_normed, {N, Q}, act), positions, heads_,
                       head_dim_, rotary_base_);
    ops::rope_backward(st.dk, ensure_shape(st.dk_normed, {N, KV}, act), positions, kv_heads_,
                       head_dim_, rotary_base_);
    norm_heads_backward(*q_norm_, st.q_raw, st.q_rstd, st.dq_normed, st.dq, st);
    norm_heads_backward(*k_norm_, st.k_raw, st.k_rstd, st.dk_normed, st.dk, st);
  } else {
    ops::rope_backward(st.dq, st.dq, positions, heads_, head_dim_, rotary_base_);
    ops::rope_backward(st.dk, st.dk, positions, kv_heads_, head_dim_, rotary_base_);
  }
  // Each rank's heads give a partial da over all N tokens; the TP entry sums them.
  Tensor& da = region_.active() ? ensure_shape(st.da_full, {N, hidden_}, act) : da_NH;
  ops::linear_backward_dx(st.dq, wq_->compute_value(), da, false);
  ops::linear_backward_dx(st.dk, wk_->compute_value(), da, true);
  ops::linear_backward_dx(st.dv, wv_->compute_value(), da, true);
  if (region_.active()) {
    region_.enter_backward(st.da_full, da_NH, false, st.shard, [&] { weight_gradients(st); });
  }
}

void Attention::norm_heads_backward(const Parameter& norm, const Tensor& raw, const Tensor& rstd,
                                    const Tensor& grad_normed, const Tensor& grad_raw,
                                    AttentionStash& st) const {
  // Each TP rank normalised its own heads: the weight's gradient is summed over TP.
  rmsnorm_backward_summed(region_.active() ? region_.tp : nullptr, grad_normed, raw, norm, rstd,
                          grad_raw, st.norm_dw, false);
}

ops::AttentionShape Attention::shape(int64_t batch, int64_t seq) const {
  return {batch, seq, seq, heads_, kv_heads_, head_dim_};
}

void Attention::backward_dw(AttentionStash& st) const {
  if (!region_.active()) weight_gradients(st);  // with TP, done under backward_dx's reduction
}

void Attention::weight_gradients(AttentionStash& st) const {
  ops::linear_backward_dw(st.dy, st.o, wo_->grad);
  ops::linear_backward_dw(st.dq, st.a, wq_->grad);
  ops::linear_backward_dw(st.dk, st.a, wk_->grad);
  ops::linear_backward_dw(st.dv, st.a, wv_->grad);
}

}  // namespace moefold
