#include "model/model.h"

#include "absl/strings/str_cat.h"

#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/rmsnorm.h"

namespace moefold {

// Registration order, which is the order of parameters(): embed, each layer (attn_norm,
// attn/{wq,wk,wv,wo}, ffn_norm, mlp/* or moe/{router,experts/*,shared/*}), final_norm, lm_head.
Model::Model(const ModelConfig& config, const ParallelContext& ctx) : config_(config), ctx_(ctx) {
  const absl::Status valid = validate(config_, ctx_);
  MOEFOLD_CHECK(valid.ok(), valid.message());
  size_t registered = 0;
  const auto end_module = [&] {  // the parameters registered since the last module ended
    module_parameters_.emplace_back();
    for (; registered < registry_.parameters().size(); ++registered)
      module_parameters_.back().push_back(registry_.parameters()[registered].get());
  };
  embedding_ = std::make_unique<Embedding>(config_, ctx_, registry_);
  end_module();
  for (int l = 0; l < config_.num_layers; ++l) {
    layers_.push_back(std::make_unique<TransformerLayer>(config_, ctx_, l, registry_));
    end_module();
  }
  final_norm_ = registry_.add_norm(shard_layout("final_norm", {config_.hidden_size}, ctx_.coords));
  Parameter* tied = config_.untie_embeddings_and_output_weights ? nullptr : embedding_->weight();
  lm_head_ = std::make_unique<LmHead>(config_, ctx_, tied, registry_);
  end_module();
}

void Model::notify(const ParameterHook& hook, size_t module) const {
  if (hook) hook(module_parameters_[module]);
}

absl::Status Model::validate(const ModelConfig& c, const ParallelContext& ctx) {
  auto invalid = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (c.num_layers < 1) return invalid("num_layers ", c.num_layers, " must be at least 1");
  if (c.hidden_size < 1 || c.num_attention_heads < 1 ||
      c.hidden_size % c.num_attention_heads != 0) {
    return invalid("hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
                   c.num_attention_heads);
  }
  if (c.head_dim() % 2 != 0) {
    return invalid("head dim hidden_size/num_attention_heads = ", c.head_dim(),
                   " must be even for rotary embeddings");
  }
  if (c.kv_heads() < 1 || c.num_attention_heads % c.kv_heads() != 0) {
    return invalid("num_attention_heads ", c.num_attention_heads,
                   " is not divisible by num_query_groups ", c.kv_heads());
  }
  if (c.vocab_size < 1) return invalid("vocab_size ", c.vocab_size, " must be positive");
  bool any_dense = false, any_moe = false;
  for (int l = 0; l < c.num_layers; ++l) (c.is_moe_layer(l) ? any_moe : any_dense) = true;
  if (any_dense && c.ffn_hidden_size < 1) {
    return invalid("ffn_hidden_size ", c.ffn_hidden_size, " must be positive (dense layers)");
  }
  if (any_moe) {
    const MoeConfig& m = c.moe;
    if (m.moe_ffn_hidden_size < 1) {
      return invalid("moe_ffn_hidden_size ", m.moe_ffn_hidden_size, " must be positive");
    }
    if (m.moe_router_topk < 1 || m.moe_router_topk > m.num_experts) {
      return invalid("moe_router_topk ", m.moe_router_topk, " must be in [1, num_experts ",
                     m.num_experts, "]");
    }
    if (m.moe_router_enable_expert_bias &&
        m.moe_router_score_function != RouterScoreFunction::kSigmoid) {
      return invalid("moe_router_enable_expert_bias needs moe_router_score_function: sigmoid");
    }
    if (m.moe_router_num_groups > 0) {
      const int G = m.moe_router_num_groups, gk = m.moe_router_group_topk;
      if (m.num_experts % G != 0) {
        return invalid("num_experts ", m.num_experts, " is not divisible by moe_router_num_groups ",
                       G);
      }
      if (gk < 1 || gk > G || m.moe_router_topk % gk != 0 ||
          m.moe_router_topk / gk > m.num_experts / G) {
        return invalid("moe_router_group_topk ", gk, " must be in [1, moe_router_num_groups ", G,
                       "], divide moe_router_topk ", m.moe_router_topk,
                       " and leave at most num_experts/moe_router_num_groups per group");
      }
    }
    if (m.moe_expert_capacity_factor < 0) {
      return invalid("moe_expert_capacity_factor ", m.moe_expert_capacity_factor,
                     " must not be negative");
    }
  }
  const RankCoordinates& r = ctx.coords;
  if (absl::Status tp = validate_tensor_parallel(c, ctx); !tp.ok()) return tp;
  const std::pair<const char*, int> model_parallel[] = {
      {"context_parallel_size", r.cp_size},
      {"pipeline_model_parallel_size", r.pp_size}};
  for (const auto& [key, size] : model_parallel) {
    if (size != 1) {
      return absl::UnimplementedError(absl::StrCat("not supported yet: ", key, " ", size,
                                                   " (the model computes with CP=PP=1)"));
    }
  }
  // Expert parallelism (moe_layer.h): experts over EP, each expert's F over ETP.
  if (any_moe && c.moe.num_experts % r.ep_size != 0) {
    return invalid("num_experts ", c.moe.num_experts,
                   " is not divisible by expert_model_parallel_size ", r.ep_size);
  }
  if (any_moe && c.moe.moe_ffn_hidden_size % r.etp_size != 0) {
    return invalid("moe_ffn_hidden_size ", c.moe.moe_ffn_hidden_size,
                   " is not divisible by expert_tensor_parallel_size ", r.etp_size);
  }
  if (any_moe && c.moe.moe_token_dispatcher_type != "alltoall" &&
      c.moe.moe_token_dispatcher_type != "allgather") {
    return invalid("moe_token_dispatcher_type ", c.moe.moe_token_dispatcher_type,
                   " must be alltoall or allgather");
  }
  return absl::OkStatus();
}

void Model::init_parameters(uint64_t seed) { registry_.init(seed); }

std::vector<Parameter*> Model::parameters() {
  std::vector<Parameter*> out;
  for (const auto& p : registry_.parameters()) out.push_back(p.get());
  return out;
}

std::vector<Buffer*> Model::buffers() {
  std::vector<Buffer*> out;
  for (const auto& b : registry_.buffers()) out.push_back(b.get());
  return out;
}

std::vector<Tensor*> Model::expert_bias_buffers() {
  std::vector<Tensor*> out;
  for (const auto& layer : layers_) {
    if (layer->is_moe() && layer->moe()->router().expert_bias() != nullptr) {
      out.push_back(&layer->moe()->router().expert_bias()->value);
    }
  }
  return out;
}

std::unique_ptr<ModelStash> Model::make_stash() const {
  return std::make_unique<ModelStash>(config_.num_layers);
}

void Model::zero_grad() { registry_.zero_grad(); }

MicroBatchStats Model::forward(const MicroBatch& batch, const LossScales& scales,
                               ModelStash& stash) {
  return run_forward(batch, &scales, stash);
}

MicroBatchStats Model::evaluate(const MicroBatch& batch) {
  if (!eval_stash_) eval_stash_ = make_stash();
  return run_forward(batch, nullptr, *eval_stash_);
}

MicroBatchStats Model::run_forward(const MicroBatch& batch, const LossScales* scales,
                                   ModelStash& st) {
  const int64_t B = batch.batch, S = batch.seq, N = B * S, H = config_.hidden_size;
  const int L = config_.num_layers;
  MOEFOLD_CHECK(B > 0 && S > 0 && static_cast<int64_t>(batch.tokens.size()) == N &&
                static_cast<int64_t>(batch.labels.size()) == N &&
                static_cast<int64_t>(batch.loss_mask.size()) == N);
  MOEFOLD_CHECK(static_cast<int>(st.layers.size()) == L);
  st.batch = B;
  st.seq = S;
  st.tokens = batch.tokens;
  st.positions.resize(N);
  for (int64_t t = 0; t < N; ++t) st.positions[t] = static_cast<int32_t>(t % S);
  const TpRegion region{ctx_.tp.get(), ctx_.config.sequence_parallel};
  const int64_t n = region.local_rows(N);  // residual rows: this rank's token shard under SP
  st.residual.resize(L + 1);
  for (Tensor& r : st.residual) ensure_shape(r, {n, H});

  notify(forward_pre_hook_, 0);
  embedding_->forward(st.tokens.data(), N, st.residual[0]);
  const double aux_scale = scales ? scales->aux : 0.0;
  for (int l = 0; l < L; ++l) {
    notify(forward_pre_hook_, 1 + l);
    layers_[l]->forward(st.residual[l], st.positions.data(), B, S, aux_scale, st.residual[l + 1],
                        st.layers[l]);
  }
  ensure_shape(st.final_h, {n, H});
  ensure_shape(st.final_rstd, {n});
  notify(forward_pre_hook_, L + 1);
  cpu::rmsnorm_forward(st.residual[L].data(), final_norm_->value.data(), st.final_h.data(),
                       st.final_rstd.data(), n, H, config_.norm_epsilon);
  Tensor* d_final = nullptr;
  if (scales) d_final = &ensure_shape(st.d_final_h, {n, H});
  const float lm_scale = scales ? static_cast<float>(scales->lm) : 0.0f;

  MicroBatchStats stats;
  stats.lm_loss_sum = lm_head_->forward_backward(st.final_h, batch.labels.data(),
                                                 batch.loss_mask.data(), lm_scale, d_final);
  st.has_gradients = scales != nullptr;
  for (float m : batch.loss_mask) stats.loss_mask_sum += m;
  for (int l = 0; l < L; ++l) {
    if (!layers_[l]->is_moe()) continue;
    const RouterStash& router = st.layers[l].moe.router;
    stats.aux_loss += router.aux_loss;
    stats.z_loss += router.z_loss;
    stats.moe.push_back(
        {l, router.counts, router.dropped, router.rows * config_.moe.moe_router_topk});
    // Each TP×CP rank routes its own share of the tokens (moe_layer.h): counts add up.
  }
  return stats;
}

void Model::backward(ModelStash& st) {
  MOEFOLD_CHECK(st.has_gradients, "backward needs a forward with LossScales on this stash");
  const int64_t N = st.batch * st.seq, H = config_.hidden_size;
  const int L = config_.num_layers;
  const TpRegion region{ctx_.tp.get(), ctx_.config.sequence_parallel};
  const int64_t n = region.local_rows(N);
  ensure_shape(st.dh, {n, H});
  rmsnorm_backward_tp(region, st.d_final_h.data(), st.residual[L].data(), final_norm_->value.data(),
                      st.final_rstd.data(), st.dh.data(), final_norm_->grad.data(),
                      st.final_norm_dw, n, H, false);
  notify(grad_ready_hook_, L + 1);
  for (int l = L - 1; l >= 0; --l) {
    layers_[l]->backward(st.dh, st.positions.data(), st.layers[l]);
    notify(grad_ready_hook_, 1 + l);
  }
  embedding_->backward_dw(st.dh, st.tokens.data(), N);
  notify(grad_ready_hook_, 0);
  st.has_gradients = false;
}

int64_t Model::active_parameter_count() const {
  // Every layer's touched weights, the final norm and the output projection; the embedding
  // lookup does no multiply-adds and is not counted (the tied table counts once, as output).
  int64_t n =
      config_.hidden_size + static_cast<int64_t>(config_.padded_vocab_size()) * config_.hidden_size;
  for (const auto& layer : layers_) n += layer->active_parameter_count();
  return n;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : registry_.parameters()) n += p->layout.global_numel();
  return n;
}

}  // namespace moefold
