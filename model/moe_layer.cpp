#include "model/moe_layer.h"

#include <cmath>
#include <string>

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/permute.h"
#include "tensor/cpu/swiglu.h"

namespace moefold {

MoeLayer::MoeLayer(const ModelConfig& config, const ParallelContext& ctx, int layer,
                   ParameterRegistry& registry)
    : ctx_(ctx),
      hidden_(config.hidden_size),
      experts_(config.moe.num_experts),
      topk_(config.moe.moe_router_topk),
      ffn_(config.moe.moe_ffn_hidden_size),
      router_(config, ctx, layer, registry) {
  const std::string prefix = "layers/" + std::to_string(layer) + "/moe/";
  const float std = config.init_method_std;
  const float out_std = std / std::sqrt(2.0f * config.num_layers);
  const int64_t E = experts_, F = ffn_, H = hidden_;
  w_gate_ = registry.add_weight(shard_layout(prefix + "experts/w_gate", {E, F, H}, ctx.coords), std,
                                true);
  w_up_ =
      registry.add_weight(shard_layout(prefix + "experts/w_up", {E, F, H}, ctx.coords), std, true);
  w_down_ = registry.add_weight(shard_layout(prefix + "experts/w_down", {E, H, F}, ctx.coords),
                                out_std, true);
  if (config.moe.moe_shared_expert_intermediate_size > 0) {
    shared_ = std::make_unique<Mlp>(config, ctx, prefix + "shared/",
                                    config.moe.moe_shared_expert_intermediate_size, registry);
  }
}

void MoeLayer::forward(const Tensor& x_NH, int64_t batch, int64_t seq, double aux_scale,
                       Tensor& y_NH, bool accumulate, MoeStash& st) const {
  const int64_t N = batch * seq, H = hidden_, F = ffn_, E = experts_, k = topk_;
  MOEFOLD_CHECK(x_NH.numel() == N * H && y_NH.numel() == N * H);
  st.aux_scale = aux_scale;
  router_.forward(x_NH, batch, seq, st.router);

  st.counts.assign(E, 0);
  st.rows = cpu::build_expert_permutation(st.router.idx.data(), st.router.keep.data(), N, k, E,
                                          st.counts.data(), ensure_size(st.perm, N * k));
  st.offsets.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e) st.offsets[e + 1] = st.offsets[e] + st.counts[e];
  const int64_t R = st.rows;
  ensure_shape(st.xp, {R, H});
  ensure_shape(st.gate, {R, F});
  ensure_shape(st.up, {R, F});
  ensure_shape(st.act, {R, F});
  ensure_shape(st.y, {R, H});
  cpu::permute_tokens(x_NH.data(), st.perm.data(), st.xp.data(), R, k, H);
  const int64_t* off = st.offsets.data();
  cpu::grouped_linear_forward(st.xp.data(), w_gate_->value.data(), st.gate.data(), off, E, H, F);
  cpu::grouped_linear_forward(st.xp.data(), w_up_->value.data(), st.up.data(), off, E, H, F);
  cpu::swiglu_forward(st.gate.data(), st.up.data(), st.act.data(), R * F);
  cpu::grouped_linear_forward(st.act.data(), w_down_->value.data(), st.y.data(), off, E, F, H);

  if (shared_) {
    shared_->forward(x_NH, y_NH, accumulate, st.shared);
  } else if (!accumulate) {
    y_NH.zero();
  }
  cpu::combine_tokens(st.y.data(), st.perm.data(), st.router.gates.data(), y_NH.data(), R, k, H);
}

void MoeLayer::backward_dx(const Tensor& dy_NH, Tensor& dx_NH, MoeStash& st) const {
  const int64_t N = st.router.batch * st.router.seq, H = hidden_, F = ffn_, E = experts_;
  const int64_t k = topk_, R = st.rows;
  MOEFOLD_CHECK(dy_NH.numel() == N * H && dx_NH.numel() == N * H);
  ensure_shape(st.dgates, {N, k}).zero();
  ensure_shape(st.dact, {R, F});
  ensure_shape(st.dxp, {R, H});
  ensure_shape(st.dy, {R, H});
  cpu::combine_tokens_backward(dy_NH.data(), st.y.data(), st.perm.data(), st.router.gates.data(),
                               st.dy.data(), st.dgates.data(), R, k, H);
  const int64_t* off = st.offsets.data();
  cpu::grouped_linear_backward_dx(st.dy.data(), w_down_->value.data(), st.dact.data(), off, E, F, H,
                                  false);
  cpu::swiglu_backward(st.dact.data(), st.gate.data(), st.up.data(), st.gate.data(), st.up.data(),
                       R * F);
  cpu::grouped_linear_backward_dx(st.gate.data(), w_gate_->value.data(), st.dxp.data(), off, E, H,
                                  F, false);
  cpu::grouped_linear_backward_dx(st.up.data(), w_up_->value.data(), st.dxp.data(), off, E, H, F,
                                  true);
  router_.backward_dx(st.dgates, st.aux_scale, dx_NH, false, st.router);
  cpu::permute_tokens_backward(st.dxp.data(), st.perm.data(), dx_NH.data(), R, k, H);
  if (shared_) shared_->backward_dx(dy_NH, dx_NH, true, st.shared);
}

void MoeLayer::backward_dw(MoeStash& st) const {
  const int64_t H = hidden_, F = ffn_, E = experts_;
  const int64_t* off = st.offsets.data();
  cpu::grouped_linear_backward_dw(st.dy.data(), st.act.data(), w_down_->grad.data(), off, E, F, H);
  cpu::grouped_linear_backward_dw(st.gate.data(), st.xp.data(), w_gate_->grad.data(), off, E, H, F);
  cpu::grouped_linear_backward_dw(st.up.data(), st.xp.data(), w_up_->grad.data(), off, E, H, F);
  router_.backward_dw(st.router);
  if (shared_) shared_->backward_dw(st.shared);
}

int64_t MoeLayer::active_parameter_count() const {
  int64_t n = experts_ * hidden_ + topk_ * 3 * hidden_ * ffn_;
  if (shared_) n += shared_->parameter_count();
  return n;
}

}  // namespace moefold
