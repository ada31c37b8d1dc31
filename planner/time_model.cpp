#include "planner/time_model.h"

#include <algorithm>

#include "planner/memory_model.h"

namespace moefold {
namespace {

constexpr double kFloat32 = 4;
// Kernels one layer launches per micro-batch (forward and backward together); an MoE layer adds
// its router, permutations and grouped GEMMs.
constexpr double kKernelsPerLayer = 45;
constexpr double kKernelsPerMoe = 25;

double elementwise_seconds(double bytes, const ClusterSpec& c) {
  return bytes / (c.memory_bandwidth * c.elementwise_efficiency);
}

// Adds a GEMM's forward to F and its two backward GEMMs to B (input gradient) and W (weights).
void add_gemm(double m, double n, double k, const ClusterSpec& c, ChunkTime& t,
              double TimeParts::*part) {
  const double s = gemm_seconds(m, n, k, c);
  t.forward.*part += s;
  t.backward_input.*part += s;
  t.backward_weight.*part += s;
}

// Exposed seconds of a communication that can hide behind `cover` seconds of compute.
double exposed(double comm, double cover) { return std::max(0.0, comm - cover); }

// TP collectives of one block (attention, dense / shared MLP) on N·H activations: under sequence
// parallelism an all-gather at entry and a reduce-scatter at exit, else one all-reduce at exit
// (forward) and at entry (backward). Forward exits run in tp_comm_overlap_chunks pieces, each
// one's reduction under the next piece's GEMM; backward reductions run under the weight GEMMs.
void add_tp_block(const Workload& w, const ClusterSpec& c, const GroupSpans& g, double block_w,
                  ChunkTime& t) {
  if (w.tp <= 1) return;
  const double bytes = w.tokens() * w.model.hidden_size * c.compute_bytes;
  const double chunks = std::max(1, w.parallel.tp_comm_overlap_chunks);
  if (w.sequence_parallel()) {
    const double ag = collective_seconds(Collective::kAllGather, bytes, g.tp, c);
    const double rs = collective_seconds(Collective::kReduceScatter, bytes, g.tp, c);
    t.forward.tp_comm += ag + rs / chunks;
    t.backward_input.tp_comm += ag + exposed(rs, block_w);
  } else {
    const double ar = collective_seconds(Collective::kAllReduce, bytes, g.tp, c);
    t.forward.tp_comm += ar / chunks;
    t.backward_input.tp_comm += exposed(ar, block_w);
  }
}

void add_mlp(const Workload& w, const ClusterSpec& c, const GroupSpans& g, double f_local,
             ChunkTime& t) {
  const double N = w.tokens(), H = w.model.hidden_size;
  ChunkTime mlp;
  add_gemm(N, 2 * f_local, H, c, mlp, &TimeParts::gemm);
  add_gemm(N, H, f_local, c, mlp, &TimeParts::gemm);
  // SwiGLU reads gate and up and writes act; backward reads three and writes two.
  const double bytes = c.compute_bytes * N * f_local;
  mlp.forward.elementwise += elementwise_seconds(3 * bytes, c);
  mlp.backward_input.elementwise += elementwise_seconds(5 * bytes, c);
  add_tp_block(w, c, g, mlp.w(), mlp);
  t.forward += mlp.forward;
  t.backward_input += mlp.backward_input;
  t.backward_weight += mlp.backward_weight;
}

void add_attention(const Workload& w, const ClusterSpec& c, const GroupSpans& g, ChunkTime& t) {
  const ModelConfig& m = w.model;
  const double N = w.tokens(), H = m.hidden_size, d = m.head_dim();
  const double q = double(m.num_attention_heads) * d / w.tp;
  const double kv = double(m.kv_heads()) * d / w.tp;
  ChunkTime a;
  add_gemm(N, q + 2 * kv, H, c, a, &TimeParts::gemm);
  add_gemm(N, H, q, c, a, &TimeParts::gemm);
  // Causal attention: 4·S²·d per head and sequence, half of it masked; CP splits the pairs.
  const double flops = 2.0 * w.training.micro_batch_size * double(m.seq_length) * m.seq_length *
                       d * m.num_attention_heads / (w.tp * w.cp);
  const double core = flops / (c.peak_flops * c.attention_efficiency);
  a.forward.attention += core;
  a.backward_input.attention += 2 * core;
  // RoPE on q and k (read and write), forward and backward.
  a.forward.elementwise += elementwise_seconds(2 * c.compute_bytes * N * (q + kv), c);
  a.backward_input.elementwise += elementwise_seconds(2 * c.compute_bytes * N * (q + kv), c);
  if (m.qk_layernorm) {  // the q/k norms: read and write forward; dy, x in and dx out backward
    a.forward.elementwise += elementwise_seconds(2 * c.compute_bytes * N * (q + kv), c);
    a.backward_input.elementwise += elementwise_seconds(3 * c.compute_bytes * N * (q + kv), c);
  }
  if (w.cp > 1) {
    // The ring passes K and V (and in backward their gradients too) CP−1 times, under the core.
    const double block = 2 * N * kv * c.compute_bytes;
    const double step = collective_seconds(Collective::kSendRecv, block, g.cp, c);
    a.forward.cp_comm += exposed((w.cp - 1) * step, core);
    a.backward_input.cp_comm += exposed(2 * (w.cp - 1) * step, 2 * core);
  }
  add_tp_block(w, c, g, a.w(), a);
  t.forward += a.forward;
  t.backward_input += a.backward_input;
  t.backward_weight += a.backward_weight;
}

void add_moe(const Workload& w, const ClusterSpec& c, const GroupSpans& g, double attention_cover,
             ChunkTime& t) {
  const MoeConfig& moe = w.model.moe;
  const double H = w.model.hidden_size, nr = w.routed_rows(), k = moe.moe_router_topk;
  const double R = nr * k, Re = w.expert_rows(), El = w.local_experts();
  const double F = double(moe.moe_ffn_hidden_size) / w.etp;
  add_gemm(nr, moe.num_experts, H, c, t, &TimeParts::gemm);  // router
  // Grouped GEMMs: El experts of Re/El rows each, on the busiest rank.
  ChunkTime experts;
  const double rows = Re / El;
  add_gemm(rows, 2 * F, H, c, experts, &TimeParts::experts);
  add_gemm(rows, H, F, c, experts, &TimeParts::experts);
  t.forward.experts += El * experts.forward.experts;
  t.backward_input.experts += El * experts.backward_input.experts;
  t.backward_weight.experts += El * experts.backward_weight.experts;
  const double expert_b = El * experts.backward_input.experts;
  const double expert_f = El * experts.forward.experts;
  // Router softmax / top-k, the permutations into and out of dispatch order, SwiGLU, gating.
  const double bytes = c.compute_bytes * (3 * nr * moe.num_experts + 4 * R * H + 3 * Re * F) +
                       kFloat32 * nr * moe.num_experts;
  t.forward.elementwise += elementwise_seconds(bytes, c);
  t.backward_input.elementwise += elementwise_seconds(5.0 / 3.0 * bytes, c);

  // Dispatch and combine over ETP×EP: every assignment goes to the ETP ranks of its expert; the
  // busiest rank receives Re rows. Chunked all-to-all hides all but one chunk under the experts.
  if (g.etp_ep.size > 1) {
    const double row_bytes = H * c.compute_bytes;
    double one;
    if (moe.moe_token_dispatcher_type == "allgather") {
      const double gathered = nr * H * c.compute_bytes * g.etp_ep.size;
      one = collective_seconds(Collective::kAllGather, gathered, g.etp_ep, c);
    } else {
      one = collective_seconds(Collective::kAllToAll, std::max(R * w.etp, Re) * row_bytes,
                               g.etp_ep, c);
    }
    const double chunks = std::max(1, w.parallel.moe_a2a_overlap_chunks);
    const double hidden_f = std::min(one * (1 - 1 / chunks), expert_f);
    const double hidden_b = std::min(one * (1 - 1 / chunks), expert_b);
    t.forward.ep_comm += 2 * one - hidden_f;
    t.backward_input.ep_comm += 2 * one - hidden_b;
  }
  // FSSDP: each micro-batch gathers the local experts over expert-DP (forward and again for
  // backward) and reduce-scatters their gradients, during the layer's attention.
  if (w.parallel.moe_fssdp && g.edp.size > 1) {
    const double weights = El * 3 * H * F;
    const double gather = collective_seconds(Collective::kAllGather, weights * c.compute_bytes,
                                             g.edp, c);
    const double reduce = collective_seconds(Collective::kReduceScatter, weights * kFloat32,
                                             g.edp, c);
    t.forward.fssdp_comm += exposed(gather, attention_cover);
    t.backward_weight.fssdp_comm += exposed(gather + reduce, 2 * attention_cover);
  }
  if (moe.moe_shared_expert_intermediate_size > 0) {
    add_mlp(w, c, g, double(moe.moe_shared_expert_intermediate_size) / w.tp, t);
  }
  if (w.tp > 1 && !w.sequence_parallel()) {  // routed rows split over TP are gathered back
    const double ag = collective_seconds(Collective::kAllGather,
                                         w.tokens() * H * c.compute_bytes, g.tp, c);
    t.forward.tp_comm += ag;
    t.backward_input.tp_comm += ag;
  }
}

}  // namespace

TimeParts& TimeParts::operator+=(const TimeParts& o) {
  gemm += o.gemm;
  experts += o.experts;
  attention += o.attention;
  elementwise += o.elementwise;
  tp_comm += o.tp_comm;
  cp_comm += o.cp_comm;
  ep_comm += o.ep_comm;
  fssdp_comm += o.fssdp_comm;
  return *this;
}

TimeParts operator*(double s, const TimeParts& t) {
  TimeParts r;
  r += t;
  r.gemm *= s;
  r.experts *= s;
  r.attention *= s;
  r.elementwise *= s;
  r.tp_comm *= s;
  r.cp_comm *= s;
  r.ep_comm *= s;
  r.fssdp_comm *= s;
  return r;
}

GroupSpans layout_spans(const RankLayout& layout, const ClusterSpec& cluster) {
  const int r = cluster.ranks_per_node;
  return {group_span(layout, GroupKind::kTp, r),     group_span(layout, GroupKind::kCp, r),
          group_span(layout, GroupKind::kPp, r),     group_span(layout, GroupKind::kDpCp, r),
          group_span(layout, GroupKind::kEtpEp, r), group_span(layout, GroupKind::kEdp, r)};
}

double gemm_seconds(double m, double n, double k, const ClusterSpec& cluster) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  const double eff = gemm_efficiency(cluster, std::min({m, n, k}));
  return 2 * m * n * k / (cluster.peak_flops * eff);
}

ChunkTime chunk_time(const Workload& w, const ClusterSpec& c, const GroupSpans& g, int stage,
                     int chunk) {
  ChunkTime t;
  const ModelConfig& m = w.model;
  const double n = w.residual_rows(), H = m.hidden_size;
  const LayerRange layers = w.partition.layers(stage, chunk);
  for (int l = layers.begin; l < layers.end; ++l) {
    ChunkTime layer;
    add_attention(w, c, g, layer);
    const double attention_cover = layer.forward.attention + layer.forward.gemm;
    if (m.is_moe_layer(l)) {
      add_moe(w, c, g, attention_cover, layer);
    } else {
      add_mlp(w, c, g, double(m.ffn_hidden_size) / w.tp, layer);
    }
    // Two RMSNorms and two residual adds on the residual rows; backward about twice the traffic.
    const double bytes = c.compute_bytes * n * H * 10;
    layer.forward.elementwise += elementwise_seconds(bytes, c);
    layer.backward_input.elementwise += elementwise_seconds(2 * bytes, c);
    const double kernels = kKernelsPerLayer + (m.is_moe_layer(l) ? kKernelsPerMoe : 0);
    layer.forward.elementwise += kernels / 3 * c.kernel_overhead;
    layer.backward_input.elementwise += 2 * kernels / 3 * c.kernel_overhead;
    if (w.training.recompute_granularity == RecomputeGranularity::kFull) {
      layer.backward_input += layer.forward;  // the forward again before backward
    }
    t.forward += layer.forward;
    t.backward_input += layer.backward_input;
    t.backward_weight += layer.backward_weight;
  }
  if (w.partition.owns_output(stage, chunk)) {
    // The fused LM head and loss: logits, their gradient and dW, all in the forward pass.
    const double rows = w.tokens(), V = double(m.padded_vocab_size()) / w.tp;
    const double s = gemm_seconds(rows, V, H, c);
    t.forward.gemm += 3 * s;
    t.forward.elementwise += elementwise_seconds(3 * kFloat32 * rows * V, c);
    if (w.tp > 1) {
      const double bytes = rows * H * c.compute_bytes;
      t.forward.tp_comm += collective_seconds(Collective::kAllGather, bytes, g.tp, c) +
                           collective_seconds(Collective::kReduceScatter, bytes, g.tp, c);
    }
  }
  if (w.partition.owns_embedding(stage, chunk)) {
    const double bytes = c.compute_bytes * n * H;
    t.forward.elementwise += elementwise_seconds(2 * bytes, c);
    t.backward_weight.elementwise += elementwise_seconds(kFloat32 * n * H * 2, c);
  }
  return t;
}

StepExtras step_extras(const Workload& w, const ClusterSpec& c, const GroupSpans& g, int stage,
                       double last_backward_seconds, double first_forward_seconds) {
  StepExtras x;
  const StageParameters p = stage_parameters(w, stage);
  const ParallelConfig& par = w.parallel;
  const bool distributed = par.use_distributed_optimizer;
  const bool fssdp = par.moe_fssdp && w.edp > 1;
  auto reduce = [&](double elements, const GroupSpan& group) {
    return collective_seconds(distributed ? Collective::kReduceScatter : Collective::kAllReduce,
                              elements * kFloat32, group, c);
  };
  x.dp_reduce = reduce(p.dense, g.dp_cp) + (fssdp ? 0 : reduce(p.experts, g.edp));
  if (distributed) {
    // The updated weights come back in the precision they are computed in.
    const double bytes = c.compute_bytes;
    x.dp_gather = collective_seconds(Collective::kAllGather, p.dense * bytes, g.dp_cp, c) +
                  (fssdp ? 0 : collective_seconds(Collective::kAllGather, p.experts * bytes,
                                                  g.edp, c));
  }
  x.reduce_exposed =
      par.overlap_grad_reduce ? exposed(x.dp_reduce, last_backward_seconds) : x.dp_reduce;
  x.gather_exposed =
      par.overlap_param_gather ? exposed(x.dp_gather, first_forward_seconds) : x.dp_gather;
  // AdamW reads and writes the parameter and both moments and reads the gradient (plus the
  // float32 master of a bf16 weight); clipping reads every gradient, zeroing writes it.
  const double dense_owned = distributed ? p.dense / (double(w.dp) * w.cp) : p.dense;
  const double expert_local = fssdp ? p.experts / w.edp : p.experts;
  const double expert_owned = distributed || fssdp ? p.experts / w.edp : p.experts;
  const double per_owned = 7 * kFloat32 + (c.master_weights ? 2 * kFloat32 : 0);
  x.optimizer = elementwise_seconds(per_owned * (dense_owned + expert_owned) +
                                        2 * kFloat32 * (p.dense + expert_local),
                                    c);
  return x;
}

}  // namespace moefold
