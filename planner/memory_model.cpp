#include "planner/memory_model.h"

#include <algorithm>

namespace moefold {
namespace {

constexpr double kFloat32 = 4;

double attention_weights(const ModelConfig& m) {
  const double q = double(m.num_attention_heads) * m.head_dim();
  const double kv = double(m.kv_heads()) * m.head_dim();
  return m.hidden_size * (2 * q + 2 * kv);
}

// MlpStash (model/mlp.h) for an MLP of `f_local` hidden units on this rank.
double mlp_stash(const Workload& w, double f_local) {
  const double N = w.tokens(), n = w.residual_rows(), H = w.model.hidden_size;
  double e = 4 * N * f_local;                    // gate, up, act, dact
  if (w.sequence_parallel()) e += 2 * N * H;     // gathered x and dy
  if (w.tp > 1) e += 2 * N * H + n * H;          // y_full, dx_full, shard
  return e;
}

// AttentionStash (model/attention.h): q, k, v, o and their gradients, plus the TP buffers.
double attention_stash(const Workload& w) {
  const ModelConfig& m = w.model;
  const double N = w.tokens(), n = w.residual_rows(), H = m.hidden_size;
  const double q = double(m.num_attention_heads) * m.head_dim() / w.tp;
  const double kv = double(m.kv_heads()) * m.head_dim() / w.tp;
  double e = 2 * (2 * N * q + 2 * N * kv) + N * m.num_attention_heads / w.tp;  // + lse
  // q/k norms: the raw projections, their norms' output gradients and the rstd rows.
  if (m.qk_layernorm) e += 2 * (N * q + N * kv) + N * (q + kv) / m.head_dim();
  if (w.sequence_parallel()) e += 2 * N * H;
  if (w.tp > 1) e += 2 * N * H + n * H;
  if (w.cp > 1) e += 4 * N * kv;  // the ring's K/V blocks in flight
  return e;
}

// MoeStash (model/moe_layer.h) on the busiest rank.
double moe_stash(const Workload& w) {
  const MoeConfig& moe = w.model.moe;
  const double H = w.model.hidden_size, nr = w.routed_rows(), k = moe.moe_router_topk;
  const double R = nr * k, Re = w.expert_rows();
  double e = 4 * nr * moe.num_experts + 2 * nr * k;  // router logits, probs, select, dlogits; gates
  if (moe.moe_shared_expert_intermediate_size > 0) {
    e += mlp_stash(w, double(moe.moe_shared_expert_intermediate_size) / w.tp);
  }
  e += 4 * R * H;                                             // xs, ys, dys, dxs
  e += 4 * Re * H + 4 * Re * moe.moe_ffn_hidden_size / w.etp; // xe ye dye dxe; gate up act dact
  if (w.tp > 1 && !w.sequence_parallel()) e += nr * H + w.tokens() * H;  // routed, routed_all
  return e;
}

}  // namespace

double layer_stash_elements(const Workload& w, int layer) {
  const double n = w.residual_rows(), H = w.model.hidden_size;
  // TransformerLayerStash: h_in, a, h_mid, m, d_norm, ffn_dy, attn_dy and the two rstd.
  double e = 7 * n * H + 2 * n + attention_stash(w);
  e += w.model.is_moe_layer(layer) ? moe_stash(w)
                                   : mlp_stash(w, double(w.model.ffn_hidden_size) / w.tp);
  return e;
}

double chunk_stash_elements(const Workload& w, int stage, int chunk) {
  const LayerRange layers = w.partition.layers(stage, chunk);
  const double n = w.residual_rows(), H = w.model.hidden_size;
  double e = (layers.size() + 1) * n * H + n * H;  // residual stream and dh
  if (w.partition.owns_output(stage, chunk)) e += 2 * n * H + n;  // final_h, d_final_h, rstd
  if (w.training.recompute_granularity == RecomputeGranularity::kFull) return e;
  for (int l = layers.begin; l < layers.end; ++l) e += layer_stash_elements(w, l);
  return e;
}

StageParameters stage_parameters(const Workload& w, int stage) {
  const ModelConfig& m = w.model;
  const double H = m.hidden_size, V = m.padded_vocab_size();
  StageParameters p;
  for (int c = 0; c < w.chunks; ++c) {
    const LayerRange layers = w.partition.layers(stage, c);
    for (int l = layers.begin; l < layers.end; ++l) {
      p.dense += 2 * H + attention_weights(m) / w.tp;
      if (m.is_moe_layer(l)) {
        const MoeConfig& moe = m.moe;
        p.dense += moe.num_experts * H + 3 * H * moe.moe_shared_expert_intermediate_size / w.tp;
        p.experts += double(moe.num_experts) * 3 * H * moe.moe_ffn_hidden_size / (w.ep * w.etp);
      } else {
        p.dense += 3 * H * m.ffn_hidden_size / w.tp;
      }
    }
    const bool embedding = w.partition.owns_embedding(stage, c);
    const bool output = w.partition.owns_output(stage, c);
    if (embedding) p.dense += V * H / w.tp;
    if (output) {
      p.dense += H;  // final norm
      // An untied head is its own table; a tied one is a copy unless the embedding is here too.
      if (m.untie_embeddings_and_output_weights || !embedding) p.dense += V * H / w.tp;
    }
  }
  return p;
}

MemoryBreakdown stage_memory(const Workload& w, const ClusterSpec& cluster, int stage) {
  MemoryBreakdown mem;
  mem.stage = stage;
  const StageParameters p = stage_parameters(w, stage);
  const ParallelConfig& par = w.parallel;
  const double dense_dp = double(w.dp) * w.cp;  // the dense gradients' reduction group
  const double edp = w.edp;
  const bool fssdp = par.moe_fssdp && edp > 1;
  const bool distributed = par.use_distributed_optimizer;

  // Weights as computed; FSSDP keeps only this rank's 1/EDP of each local expert.
  const double expert_held = fssdp ? p.experts / edp : p.experts;
  mem.parameters = cluster.compute_bytes * (p.dense + expert_held);
  mem.gradients = kFloat32 * (p.dense + expert_held);

  // Adam's two moments (and the float32 master of a bf16 weight) per owned element.
  const double state = 2 * kFloat32 + (cluster.master_weights ? kFloat32 : 0);
  mem.optimizer_state_replicated = state * p.total();
  mem.optimizer_state_distributed = state * (p.dense / dense_dp + p.experts / edp);
  mem.optimizer_state_fssdp = mem.optimizer_state_distributed;
  mem.optimizer_state = distributed ? mem.optimizer_state_distributed
                        : fssdp     ? state * (p.dense + p.experts / edp)
                                    : mem.optimizer_state_replicated;

  // The distributed optimizer reduce-scatters into a 1/DP gradient shard (grad_buckets.cpp).
  if (distributed) mem.communication_buffers += kFloat32 * (p.dense / dense_dp + expert_held / edp);
  if (fssdp) {
    // One MoE layer's local experts materialised (weights and their gradients), per
    // ExpertWorkspace, plus the exchange buffer of the same size.
    const MoeConfig& moe = w.model.moe;
    const double layer = double(w.local_experts()) * 3 * w.model.hidden_size *
                         moe.moe_ffn_hidden_size / w.etp;
    mem.communication_buffers += cluster.compute_bytes * 2 * layer + kFloat32 * layer;
  }

  // Pipeline sends are copies kept until the step's end (trainer/pipeline_executor.cpp): one
  // activation per forward that has a next virtual stage, one gradient per backward that has a
  // previous one.
  if (w.pp > 1) {
    const int stages = w.pp * w.chunks;
    double sends = 0;
    for (int c = 0; c < w.chunks; ++c) {
      const int v = c * w.pp + stage;
      sends += (v < stages - 1 ? 1 : 0) + (v > 0 ? 1 : 0);
    }
    mem.communication_buffers +=
        cluster.compute_bytes * sends * w.micro_batches * w.residual_rows() * w.model.hidden_size;
  }

  // Activations: the schedule's peak of stashed (micro-batch, chunk) pairs; each holds one chunk.
  const PipelineScheduleShape shape{w.pp, stage, w.micro_batches, w.chunks};
  const int peak = std::max(1, peak_stashed_activations(w.schedule, shape));
  double per_stash = 0;
  for (int c = 0; c < w.chunks; ++c) per_stash = std::max(per_stash, chunk_stash_elements(w, stage, c));
  mem.stashes_in_flight = peak;
  mem.activations = cluster.compute_bytes * per_stash * std::min<double>(peak, w.micro_batches * w.chunks);
  if (w.training.recompute_granularity == RecomputeGranularity::kFull) {
    // The one scratch layer stash the recomputed layer is rebuilt in.
    double largest = 0;
    for (int c = 0; c < w.chunks; ++c) {
      const LayerRange layers = w.partition.layers(stage, c);
      for (int l = layers.begin; l < layers.end; ++l) {
        largest = std::max(largest, layer_stash_elements(w, l));
      }
    }
    mem.activations += cluster.compute_bytes * largest;
  }
  if (w.partition.owns_output(stage, w.chunks - 1)) {
    // lm_head.cpp: about 2^25 logits per row chunk (256 to 4096 rows), V/TP columns each.
    const double V = w.model.padded_vocab_size();
    const double rows = std::min(std::clamp(double(int64_t{1} << 25) / V, 256.0, 4096.0),
                                 w.tokens());
    mem.loss_workspace = kFloat32 * rows * V / w.tp;
    if (w.tp > 1) mem.loss_workspace += kFloat32 * 2 * w.tokens() * w.model.hidden_size;
  }
  mem.reserved = cluster.memory_reserved;
  return mem;
}

MemoryBreakdown worst_stage_memory(const Workload& w, const ClusterSpec& cluster) {
  MemoryBreakdown worst = stage_memory(w, cluster, 0);
  for (int s = 1; s < w.pp; ++s) {
    MemoryBreakdown m = stage_memory(w, cluster, s);
    if (m.total() > worst.total()) worst = m;
  }
  return worst;
}

}  // namespace moefold
