#include "model/model.h"

#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"

#include "model/context_shard.h"
#include "model/norm_backward.h"
#include "model/scratch.h"
#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

namespace {

StagePartition checked_partition(const ModelConfig& config, const ParallelContext& ctx) {
  const absl::Status valid = Model::validate(config, ctx);
  MOEFOLD_CHECK(valid.ok(), valid.message());
  return *partition_layers(config.num_layers, ctx.config);
}

}  // namespace

// Registration order, which is the order of parameters(): embed, each layer (attn_norm,
// attn/{wq,wk,wv,wo}, ffn_norm, mlp/* or moe/{router,experts/*,shared/*}), final_norm, lm_head;
// each where this pipeline stage holds it. Names keep global layer indices, so init and
// checkpoints do not depend on the layout.
Model::Model(const ModelConfig& config, const ParallelContext& ctx)
    : config_(config), ctx_(ctx), partition_(checked_partition(config_, ctx_)) {
  const int L = config_.num_layers, V = partition_.chunks();
  const bool tied = !config_.untie_embeddings_and_output_weights;
  const bool first = is_first_virtual_stage(0), last = is_last_virtual_stage(V - 1);
  module_parameters_.resize(L + 2);
  size_t registered = 0;
  const auto end_module = [&](size_t module) {  // the parameters registered since the last one
    for (; registered < registry_.parameters().size(); ++registered)
      module_parameters_[module].push_back(registry_.parameters()[registered].get());
  };
  // The last stage's copy of a tied table registers (and initialises) as the table itself.
  if (first || (tied && last)) {
    embedding_ = std::make_unique<Embedding>(config_, ctx_, registry_);
    if (tied && ctx_.coords.pp_size > 1) shared_embedding_ = embedding_->weight();
  }
  end_module(0);
  layer_slot_.assign(L, -1);
  if (ctx_.config.moe_fssdp) expert_workspace_ = std::make_shared<ExpertWorkspace>();
  for (int chunk = 0; chunk < V; ++chunk) {
    const LayerRange range = partition_.layers(stage(), chunk);
    for (int l = range.begin; l < range.end; ++l) {
      layer_slot_[l] = static_cast<int>(layers_.size());
      layers_.push_back(
          std::make_unique<TransformerLayer>(config_, ctx_, l, registry_, expert_workspace_));
      end_module(1 + l);
    }
  }
  if (last) {
    final_norm_ =
        registry_.add_norm(shard_layout("final_norm", {config_.hidden_size}, ctx_.coords));
    lm_head_ = std::make_unique<LmHead>(config_, ctx_, tied ? embedding_->weight() : nullptr,
                                        registry_);
  }
  end_module(L + 1);
}

void Model::set_compute_dtype(DType dtype) {
  compute_dtype_ = dtype;
  registry_.set_compute_dtype(dtype);
}

void Model::notify(const ParameterHook& hook, size_t module) const {
  if (hook && !module_parameters_[module].empty()) hook(module_parameters_[module]);
}

absl::Status Model::validate(const ModelConfig& c, const ParallelContext& ctx) {
  auto invalid = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (c.num_layers < 1) return invalid("num_layers ", c.num_layers, " must be at least 1");
  if (c.hidden_size < 1 || c.num_attention_heads < 1 || c.kv_channels < 0 ||
      (c.kv_channels == 0 && c.hidden_size % c.num_attention_heads != 0)) {
    return invalid("hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
                   c.num_attention_heads, " and no kv_channels is given");
  }
  if (c.head_dim() % 2 != 0) {
    return invalid("head dim ", c.head_dim(), " must be even for rotary embeddings");
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
  if (absl::Status cp = validate_context_parallel(c, ctx); !cp.ok()) return cp;
  if (auto partition = partition_layers(c.num_layers, ctx.config); !partition.ok()) {
    return partition.status();
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
  if (any_moe && ctx.config.moe_fssdp &&
      c.moe.moe_ffn_hidden_size % (int64_t{r.etp_size} * r.edp_size) != 0) {
    return invalid("moe_ffn_hidden_size ", c.moe.moe_ffn_hidden_size,
                   " is not divisible by expert_tensor_parallel_size ", r.etp_size,
                   " x expert-data-parallel size ", r.edp_size, " (parallel.moe_fssdp)");
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

std::unique_ptr<ModelStash> Model::make_stash(int chunk) const {
  return std::make_unique<ModelStash>(recompute_ ? 0 : partition_.layers(stage(), chunk).size());
}

TransformerLayerStash& Model::layer_stash(ModelStash& st, int i) {
  return st.layers.empty() ? recompute_stash_ : st.layers[i];
}

void Model::zero_grad() { registry_.zero_grad(); }

MicroBatchStats Model::forward(const TokenBatch& batch, const LossScales& scales,
                               ModelStash& stash) {
  MOEFOLD_CHECK(ctx_.coords.pp_size == 1 && chunks() == 1,
                "forward of the whole model needs PP=1");
  return forward_chunk(0, batch, nullptr, &scales, stash);
}

void Model::backward(ModelStash& stash) {
  MOEFOLD_CHECK(ctx_.coords.pp_size == 1 && chunks() == 1,
                "backward of the whole model needs PP=1");
  backward_chunk(0, stash, nullptr);
}

MicroBatchStats Model::evaluate(const TokenBatch& batch) {
  MOEFOLD_CHECK(ctx_.coords.pp_size == 1 && chunks() == 1,
                "evaluate of the whole model needs PP=1");
  if (!eval_stash_) eval_stash_ = make_stash();
  return forward_chunk(0, batch, nullptr, nullptr, *eval_stash_);
}

MicroBatchStats Model::forward_chunk(int chunk, const TokenBatch& full_batch,
                                     const Tensor* input_nH, const LossScales* scales,
                                     ModelStash& st) {
  // Context parallelism: this rank computes its load-balanced shard of every sequence.
  const int cp_rank = ctx_.coords.cp_rank, cp_size = ctx_.coords.cp_size;
  std::optional<TokenBatch> cp_shard;
  if (cp_size > 1) cp_shard = shard_micro_batch(full_batch, cp_rank, cp_size);
  const TokenBatch& batch = cp_shard ? *cp_shard : full_batch;
  const int64_t B = batch.batch, S = batch.seq, N = B * S, H = config_.hidden_size;
  const LayerRange range = partition_.layers(stage(), chunk);
  const int Lc = range.size();
  const bool first = is_first_virtual_stage(chunk), last = is_last_virtual_stage(chunk);
  MOEFOLD_CHECK(B > 0 && S > 0 && static_cast<int64_t>(batch.tokens.size()) == N &&
                static_cast<int64_t>(batch.labels.size()) == N &&
                static_cast<int64_t>(batch.loss_mask.size()) == N);
  MOEFOLD_CHECK(static_cast<int>(st.layers.size()) == (recompute_ ? 0 : Lc),
                "a stash of another chunk, or made before set_recompute_activations");
  MOEFOLD_CHECK(first == (input_nH == nullptr), "chunk " << chunk << " input");
  st.batch = B;
  st.seq = S;
  st.tokens = batch.tokens;
  st.positions = context_token_positions(B, full_batch.seq, cp_rank, cp_size);
  const TpRegion region{ctx_.tp.get(), ctx_.config.sequence_parallel};
  const int64_t n = region.local_rows(N);  // residual rows: this rank's token shard under SP
  st.residual.resize(Lc + 1);
  const DType act = compute_dtype_;
  for (Tensor& r : st.residual) ensure_shape(r, {n, H}, act);

  if (first) {
    notify(forward_pre_hook_, 0);
    embedding_->forward(st.tokens.data(), N, st.residual[0]);
  } else {
    MOEFOLD_CHECK(input_nH->numel() == n * H, "chunk input " << input_nH->shape_string());
    ops::copy(st.residual[0], *input_nH);
  }
  const double aux_scale = scales ? scales->aux : 0.0;
  st.aux_scale = aux_scale;
  MicroBatchStats stats;
  for (int i = 0; i < Lc; ++i) {
    const int l = range.begin + i;
    notify(forward_pre_hook_, 1 + l);
    const TransformerLayer& layer = *layers_[layer_slot_[l]];
    TransformerLayerStash& layer_st = layer_stash(st, i);
    layer.forward(st.residual[i], st.positions.data(), B, S, aux_scale, st.residual[i + 1],
                  layer_st);
    if (!layer.is_moe()) continue;
    // Each TP×CP rank routes its own share of the tokens (moe_layer.h): counts add up.
    const RouterStash& router = layer_st.moe.router;
    stats.aux_loss += router.aux_loss;
    stats.z_loss += router.z_loss;
    stats.moe.push_back(
        {l, router.counts, router.dropped, router.rows * config_.moe.moe_router_topk});
  }
  if (last) {
    ensure_shape(st.final_h, {n, H}, act);
    ensure_shape(st.final_rstd, {n});
    notify(forward_pre_hook_, config_.num_layers + 1);
    ops::rmsnorm_forward(st.residual[Lc], final_norm_->compute_value(), st.final_h, st.final_rstd,
                         config_.norm_epsilon);
    Tensor* d_final = nullptr;
    if (scales) d_final = &ensure_shape(st.d_final_h, {n, H}, act);
    const float lm_scale = scales ? static_cast<float>(scales->lm) : 0.0f;
    stats.lm_loss_sum = ops::float64_zeros(1, st.final_h.device());
    lm_head_->forward_backward(st.final_h, batch.labels.data(), batch.loss_mask.data(), lm_scale,
                               d_final, stats.lm_loss_sum);
    for (float m : batch.loss_mask) stats.loss_mask_sum += m;
  }
  st.has_gradients = scales != nullptr;
  if (cp_rank != 0) {  // every CP rank holds the micro-batch's MoE losses; one reports them
    stats.aux_loss = 0;
    stats.z_loss = 0;
  }
  return stats;
}

const Tensor* Model::backward_chunk(int chunk, ModelStash& st, const Tensor* d_output_nH,
                                    bool defer_weight_gradients) {
  MOEFOLD_CHECK(st.has_gradients, "backward needs a forward with LossScales on this stash");
  MOEFOLD_CHECK(!(defer_weight_gradients && recompute_),
                "deferred weight gradients need the stored activations (no recomputation)");
  const int64_t N = st.batch * st.seq, H = config_.hidden_size;
  const LayerRange range = partition_.layers(stage(), chunk);
  const int Lc = range.size(), L = config_.num_layers;
  const bool first = is_first_virtual_stage(chunk), last = is_last_virtual_stage(chunk);
  MOEFOLD_CHECK(last == (d_output_nH == nullptr), "chunk " << chunk << " output gradient");
  const TpRegion region{ctx_.tp.get(), ctx_.config.sequence_parallel};
  const int64_t n = region.local_rows(N);
  ensure_shape(st.dh, {n, H}, compute_dtype_);
  if (last) {
    rmsnorm_backward_summed(region.sequence_group(), st.d_final_h, st.residual[Lc], *final_norm_,
                            st.final_rstd, st.dh, st.final_norm_dw, false);
    if (!defer_weight_gradients) notify(grad_ready_hook_, L + 1);
  } else {
    MOEFOLD_CHECK(d_output_nH->numel() == n * H, "chunk gradient " << d_output_nH->shape_string());
    ops::copy(st.dh, *d_output_nH);
  }
  for (int i = Lc - 1; i >= 0; --i) {
    const int l = range.begin + i;
    const TransformerLayer& layer = *layers_[layer_slot_[l]];
    TransformerLayerStash& layer_st = layer_stash(st, i);
    if (st.layers.empty()) {  // recomputation: rebuild this layer's activations first
      layer.forward(st.residual[i], st.positions.data(), st.batch, st.seq, st.aux_scale,
                    ensure_shape(recompute_output_, {n, H}, compute_dtype_), layer_st);
    }
    if (defer_weight_gradients) {
      layer.backward_dx(st.dh, st.positions.data(), layer_st);
      continue;
    }
    layer.backward(st.dh, st.positions.data(), layer_st);
    notify(grad_ready_hook_, 1 + l);
  }
  st.has_gradients = false;
  st.weight_gradients_pending = defer_weight_gradients;
  if (!defer_weight_gradients && first) embedding_backward_dw(st);
  return first ? nullptr : &st.dh;
}

void Model::weight_gradients_chunk(int chunk, ModelStash& st) {
  MOEFOLD_CHECK(st.weight_gradients_pending, "weight gradients without a deferring backward");
  const LayerRange range = partition_.layers(stage(), chunk);
  if (is_last_virtual_stage(chunk)) notify(grad_ready_hook_, config_.num_layers + 1);
  for (int i = range.size() - 1; i >= 0; --i) {
    const int l = range.begin + i;
    layers_[layer_slot_[l]]->backward_dw(st.layers[i]);
    notify(grad_ready_hook_, 1 + l);
  }
  st.weight_gradients_pending = false;
  if (is_first_virtual_stage(chunk)) embedding_backward_dw(st);
}

void Model::embedding_backward_dw(ModelStash& st) {
  embedding_->backward_dw(st.dh, st.tokens.data(), st.batch * st.seq);
  notify(grad_ready_hook_, 0);
}

int64_t Model::active_parameter_count() const {
  // Every layer's touched weights, the final norm and the output projection; the embedding
  // lookup does no multiply-adds and is not counted (the tied table counts once, as output).
  int64_t n = 0;
  if (lm_head_) {
    n += config_.hidden_size +
         static_cast<int64_t>(config_.padded_vocab_size()) * config_.hidden_size;
  }
  for (const auto& layer : layers_) n += layer->active_parameter_count();
  return n;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : registry_.parameters())
    if (!is_embedding_copy(p.get())) n += p->layout.global_numel();
  return n;
}

double MicroBatchStats::host_lm_loss_sum() const {
  return lm_loss_sum.defined() ? ops::float64_to_host(lm_loss_sum)[0] : 0.0;
}

std::vector<double> lm_loss_sums(std::span<const MicroBatchStats> stats) {
  std::vector<Tensor> losses;
  for (const MicroBatchStats& s : stats) {
    if (s.lm_loss_sum.defined()) losses.push_back(s.lm_loss_sum);
  }
  const std::vector<float> words = ops::to_host_together(losses);  // two words per float64
  std::vector<double> sums(stats.size(), 0.0);
  for (size_t i = 0, k = 0; i < stats.size(); ++i) {
    if (stats[i].lm_loss_sum.defined()) std::memcpy(&sums[i], &words[2 * k++], sizeof(double));
  }
  return sums;
}

}  // namespace moefold
