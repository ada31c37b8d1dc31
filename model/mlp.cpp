#include "model/mlp.h"

#include <cmath>

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

Mlp::Mlp(const ModelConfig& config, const ParallelContext& ctx, const std::string& prefix, int ffn,
         ParameterRegistry& registry, bool sequence_parallel)
    : ctx_(ctx),
      region_{ctx.tp.get(), sequence_parallel, ctx.config.tp_comm_overlap_chunks},
      hidden_(config.hidden_size),
      ffn_(ffn) {
  const float std = config.init_method_std;
  const float out_std = std / std::sqrt(2.0f * config.num_layers);
  w_gate_ = registry.add_weight(shard_layout(prefix + "w_gate", {ffn_, hidden_}, ctx.coords), std);
  w_up_ = registry.add_weight(shard_layout(prefix + "w_up", {ffn_, hidden_}, ctx.coords), std);
  w_down_ =
      registry.add_weight(shard_layout(prefix + "w_down", {hidden_, ffn_}, ctx.coords), out_std);
  ffn_ = w_gate_->layout.local_shape[0];
}

void Mlp::forward(const Tensor& x_NH, Tensor& y_NH, bool accumulate, MlpStash& st) const {
  const int64_t n = x_NH.numel() / hidden_;
  const int64_t N = region_.sharded() ? n * region_.size() : n;
  MOEFOLD_CHECK(y_NH.numel() == n * hidden_);
  region_.enter_forward(x_NH.view({n, hidden_}), N, st.x);
  const DType act = x_NH.dtype();
  ensure_shape(st.gate, {N, ffn_}, act);
  ensure_shape(st.up, {N, ffn_}, act);
  ensure_shape(st.act, {N, ffn_}, act);
  ops::linear_forward(st.x, w_gate_->compute_value(), st.gate);
  ops::linear_forward(st.x, w_up_->compute_value(), st.up);
  ops::swiglu_forward(st.gate, st.up, st.act);
  if (!region_.active()) {
    ops::linear_forward(st.act, w_down_->compute_value(), y_NH, accumulate);
    return;
  }
  Tensor y = y_NH.view({n, hidden_});
  const auto partial = [&](int64_t first, int64_t rows, const Tensor& out) {
    ops::linear_forward(st.act.slice_rows(first, first + rows), w_down_->compute_value(), out);
  };
  region_.exit_forward_overlapped(N, partial, st.y_full, y, accumulate, st.shard);
}

void Mlp::backward_dx(const Tensor& dy_NH, Tensor& dx_NH, bool accumulate, MlpStash& st) const {
  const int64_t N = st.x.numel() / hidden_, n = region_.local_rows(N);
  MOEFOLD_CHECK(dy_NH.numel() == n * hidden_ && dx_NH.numel() == n * hidden_);
  region_.exit_backward(dy_NH.view({n, hidden_}), N, st.dy);
  ensure_shape(st.dact, {N, ffn_}, dy_NH.dtype());
  ops::linear_backward_dx(st.dy, w_down_->compute_value(), st.dact, false);
  // gate and up are not needed after this: their gradients overwrite them.
  ops::swiglu_backward(st.dact, st.gate, st.up, st.gate, st.up);
  if (!region_.active()) {
    ops::linear_backward_dx(st.gate, w_gate_->compute_value(), dx_NH, accumulate);
    ops::linear_backward_dx(st.up, w_up_->compute_value(), dx_NH, true);
    return;
  }
  // Partial over this rank's hidden units; the TP entry sums them.
  const Tensor& dx_full = ensure_shape(st.dx_full, {N, hidden_}, dy_NH.dtype());
  ops::linear_backward_dx(st.gate, w_gate_->compute_value(), dx_full, false);
  ops::linear_backward_dx(st.up, w_up_->compute_value(), dx_full, true);
  Tensor dx = dx_NH.view({n, hidden_});
  region_.enter_backward(st.dx_full, dx, accumulate, st.shard, [&] { weight_gradients(st); });
}

void Mlp::backward_dw(MlpStash& st) const {
  if (!region_.active()) weight_gradients(st);  // with TP, done under backward_dx's reduction
}

void Mlp::weight_gradients(MlpStash& st) const {
  ops::linear_backward_dw(st.dy, st.act, w_down_->grad);
  ops::linear_backward_dw(st.gate, st.x, w_gate_->grad);
  ops::linear_backward_dw(st.up, st.x, w_up_->grad);
}

}  // namespace moefold
