#include "model/attention.h"

#include <cmath>
#include <string>

#include "model/ring_attention.h"
#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/attention.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/rope.h"

namespace moefold {

Attention::Attention(const ModelConfig& config, const ParallelContext& ctx, int layer,
                     ParameterRegistry& registry)
    : ctx_(ctx),
      region_{ctx.tp.get(), ctx.config.sequence_parallel, ctx.config.tp_comm_overlap_chunks},
      hidden_(config.hidden_size),
      heads_(config.num_attention_heads),
      kv_heads_(config.kv_heads()),
      head_dim_(config.head_dim()),
      rotary_base_(config.rotary_base) {
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
  ensure_shape(st.q, {N, Q});
  ensure_shape(st.k, {N, KV});
  ensure_shape(st.v, {N, KV});
  ensure_shape(st.o, {N, Q});
  const bool ring = ctx_.coords.cp_size > 1;
  if (ring) {
    ensure_shape(st.lse, {batch, 2, heads_, seq / 2});
  } else {
    ensure_shape(st.lse, {batch, heads_, seq});
  }
  const float* a = st.a.data();
  cpu::linear_forward(a, wq_->value.data(), st.q.data(), N, hidden_, Q);
  cpu::linear_forward(a, wk_->value.data(), st.k.data(), N, hidden_, KV);
  cpu::linear_forward(a, wv_->value.data(), st.v.data(), N, hidden_, KV);
  cpu::rope_forward(st.q.data(), st.q.data(), positions_N, N, heads_, head_dim_, rotary_base_);
  cpu::rope_forward(st.k.data(), st.k.data(), positions_N, N, kv_heads_, head_dim_, rotary_base_);
  if (ring) {
    ring_attention_forward(*ctx_.cp, {batch, seq, heads_, kv_heads_, head_dim_}, st.q.data(),
                           st.k.data(), st.v.data(), st.o.data(), st.lse.data());
  } else {
    cpu::attention_forward(st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(),
                           positions_N, positions_N, batch, seq, seq, heads_, kv_heads_,
                           head_dim_);
  }
  if (!region_.active()) {
    cpu::gemm(false, true, N, hidden_, Q, 1.0f, st.o.data(), Q, wo_->value.data(), Q,
              accumulate ? 1.0f : 0.0f, y_NH.data(), hidden_);
    return;
  }
  const auto partial = [&](int64_t first, int64_t rows, float* out) {
    cpu::linear_forward(st.o.data() + first * Q, wo_->value.data(), out, rows, Q, hidden_);
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
  ensure_shape(st.d_o, {N, Q});
  ensure_shape(st.dq, {N, Q}).zero();
  ensure_shape(st.dk, {N, KV}).zero();
  ensure_shape(st.dv, {N, KV}).zero();
  cpu::linear_backward_dx(st.dy.data(), wo_->value.data(), st.d_o.data(), N, Q, hidden_, false);
  if (ctx_.coords.cp_size > 1) {
    ring_attention_backward(*ctx_.cp, {B, S, heads_, kv_heads_, head_dim_}, st.d_o.data(),
                            st.q.data(), st.k.data(), st.v.data(), st.o.data(), st.lse.data(),
                            st.dq.data(), st.dk.data(), st.dv.data());
  } else {
    cpu::attention_backward(st.d_o.data(), st.q.data(), st.k.data(), st.v.data(), st.o.data(),
                            st.lse.data(), st.dq.data(), st.dk.data(), st.dv.data(), positions_N,
                            positions_N, B, S, S, heads_, kv_heads_, head_dim_);
  }
  cpu::rope_backward(st.dq.data(), st.dq.data(), positions_N, N, heads_, head_dim_, rotary_base_);
  cpu::rope_backward(st.dk.data(), st.dk.data(), positions_N, N, kv_heads_, head_dim_,
                     rotary_base_);
  // Each rank's heads give a partial da over all N tokens; the TP entry sums them.
  Tensor& da_full = region_.active() ? ensure_shape(st.da_full, {N, hidden_}) : da_NH;
  float* da = da_full.data();
  cpu::linear_backward_dx(st.dq.data(), wq_->value.data(), da, N, hidden_, Q, false);
  cpu::linear_backward_dx(st.dk.data(), wk_->value.data(), da, N, hidden_, KV, true);
  cpu::linear_backward_dx(st.dv.data(), wv_->value.data(), da, N, hidden_, KV, true);
  if (region_.active()) {
    region_.enter_backward(st.da_full, da_NH, false, st.shard, [&] { weight_gradients(st); });
  }
}

void Attention::backward_dw(AttentionStash& st) const {
  if (!region_.active()) weight_gradients(st);  // with TP, done under backward_dx's reduction
}

void Attention::weight_gradients(AttentionStash& st) const {
  const int64_t N = st.batch * st.seq, Q = heads_ * head_dim_, KV = kv_heads_ * head_dim_;
  const float* a = st.a.data();
  cpu::linear_backward_dw(st.dy.data(), st.o.data(), wo_->grad.data(), N, Q, hidden_);
  cpu::linear_backward_dw(st.dq.data(), a, wq_->grad.data(), N, hidden_, Q);
  cpu::linear_backward_dw(st.dk.data(), a, wk_->grad.data(), N, hidden_, KV);
  cpu::linear_backward_dw(st.dv.data(), a, wv_->grad.data(), N, hidden_, KV);
}

}  // namespace moefold
