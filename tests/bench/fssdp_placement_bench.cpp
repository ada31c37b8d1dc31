// Load-driven FSSDP against plain EP under skewed routing (issue 19): one transformer layer
// (attention, then the MoE layer) over EP = world ranks (run it with
// scripts/bench_fssdp_placement.sh), so that the replica gather travels behind the attention and
// the gradient reduction behind the attention backward, as in training. The skew is test-only: the
// router's expert bias (sigmoid scores) is set every step to bias · log p_e, p_e a Zipf law of
// exponent s over the experts in an order that rotates every 20 steps (the hot set moves).
// The expert FFN is large against the token count so that the experts' GEMMs, which placement
// moves, dominate the layer rather than its fixed costs (router, permutation, all-to-all).
// Per s and mode it prints, as medians over the steps after a warm-up: max/mean rows computed per
// rank; the slowest rank's expert compute (the grouped GEMMs of forward and backward) in this
// thread's CPU time, which is what it takes on a core of its own, the ranks' mean of it (with
// more ranks than cores, ranks/cores times the mean bounds any placement's wall time from
// below), and the slowest rank's expert compute in wall time; the layer's
// forward+backward wall time between barriers (the step of this one-layer model); and the bytes
// each rank sends per step in the token all-to-all and in the sparse expert collectives.
// Timings are measurements only; nothing is asserted.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "model/transformer_layer.h"
#include "model/parameter.h"
#include "parallel/context.h"
#include "parallel/mpi_runtime.h"

namespace moefold {
namespace {

constexpr int64_t kHidden = 128, kFfn = 1024, kExperts = 16, kTopk = 2, kBatch = 1, kSeq = 256;
constexpr int kSteps = 65, kWarmup = 5, kRotateEvery = 20;
constexpr float kBias = 0.03f;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Result {
  double max_over_mean = 0, expert_cpu_seconds = 0, mean_expert_cpu_seconds = 0;
  double expert_wall_seconds = 0, layer_seconds = 0;
  double a2a_bytes = 0, sparse_bytes = 0;
};

Result run(double s, int spare_slots, int world) {
  ParallelConfig parallel;
  parallel.expert_model_parallel_size = world;
  parallel.expert_tensor_parallel_size = 1;
  parallel.fssdp_spare_slots = spare_slots;
  auto ctx = ParallelContext::create(parallel, MPI_COMM_WORLD);
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", ctx.status().ToString().c_str());
    std::exit(1);
  }
  ModelConfig config;
  config.num_layers = 2;
  config.hidden_size = kHidden;
  config.num_attention_heads = 4;
  config.seq_length = kSeq;
  config.moe.num_experts = kExperts;
  config.moe.moe_ffn_hidden_size = kFfn;
  config.moe.moe_router_topk = kTopk;
  config.moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  config.moe.moe_router_enable_expert_bias = true;
  config.moe.moe_layer_pattern = {1, 1};
  ParameterRegistry registry;
  TransformerLayer layer(config, *ctx, 1, registry);
  registry.init(7);
  Buffer* bias = nullptr;
  for (const auto& b : registry.buffers())
    if (b->name().ends_with("expert_bias")) bias = b.get();
  const int rank = ctx->ep->rank();
  const int64_t N = kBatch * kSeq;
  std::mt19937 rng(11 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor x = Tensor::empty({N, kHidden}), dh = Tensor::empty({N, kHidden});
  Tensor y = Tensor::empty({N, kHidden});
  std::vector<int32_t> positions(N);
  for (int64_t i = 0; i < N; ++i) positions[i] = static_cast<int32_t>(i % kSeq);
  TransformerLayerStash layer_stash;
  MoeStash& stash = layer_stash.moe;
  std::vector<double> ratio, expert_cpu, mean_expert_cpu, expert_wall, seconds, a2a, sparse;
  for (int step = 0; step < kSteps; ++step) {
    const int64_t shift = (step / kRotateEvery) * 5;  // the hot set moves
    for (int64_t e = 0; e < kExperts; ++e) {
      const int64_t popularity_rank = (e + kExperts - shift % kExperts) % kExperts;
      bias->value.data()[e] = kBias * static_cast<float>(-s * std::log(popularity_rank + 1.0));
    }
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = normal(rng);
    for (int64_t i = 0; i < dh.numel(); ++i) dh.data()[i] = normal(rng);
    stash.buffers.bytes_sent = 0;
    stash.expert_compute = {};
    ExpertReplicas* replicas = layer.moe()->replicas();
    if (replicas) replicas->reset_stats();
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    layer.forward(x, positions.data(), kBatch, kSeq, 1.0, y, layer_stash);
    layer.backward(dh, positions.data(), layer_stash);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double rows = static_cast<double>(stash.plan.expert_rows), max_rows = rows, sum_rows = rows;
    double slowest[3] = {elapsed, stash.expert_compute.cpu, stash.expert_compute.wall};
    MPI_Allreduce(MPI_IN_PLACE, slowest, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &max_rows, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &sum_rows, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double bytes[3] = {static_cast<double>(stash.buffers.bytes_sent), 0, stash.expert_compute.cpu};
    if (replicas) {
      bytes[1] = static_cast<double>(replicas->stats().gather_bytes +
                                     replicas->stats().reduce_bytes);
    }
    MPI_Allreduce(MPI_IN_PLACE, bytes, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (step < kWarmup) continue;
    ratio.push_back(max_rows / (sum_rows / world));
    seconds.push_back(slowest[0]);
    expert_cpu.push_back(slowest[1]);
    mean_expert_cpu.push_back(bytes[2] / world);
    expert_wall.push_back(slowest[2]);
    a2a.push_back(bytes[0] / world);
    sparse.push_back(bytes[1] / world);
  }
  return {median(ratio),       median(expert_cpu), median(mean_expert_cpu),
          median(expert_wall), median(seconds),    median(a2a),
          median(sparse)};
}

}  // namespace
}  // namespace moefold

int main(int argc, char** argv) {
  auto runtime = moefold::MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) return 1;
  const int world = (*runtime)->world_size();
  const int spare = argc > 1 ? std::atoi(argv[1]) : 2;
  if ((*runtime)->world_rank() == 0) {
    std::printf("one transformer layer (MoE), EP=%d, E=%lld top-%lld, H=%lld F=%lld, %lld tokens/rank, "
                "spare slots %d; medians over %d steps\n",
                world, static_cast<long long>(moefold::kExperts),
                static_cast<long long>(moefold::kTopk), static_cast<long long>(moefold::kHidden),
                static_cast<long long>(moefold::kFfn),
                static_cast<long long>(moefold::kBatch * moefold::kSeq), spare,
                moefold::kSteps - moefold::kWarmup);
    std::printf("%5s %-6s %9s %13s %12s %14s %9s %12s %16s\n", "s", "mode", "max/mean",
                "expert cpu ms", "mean cpu ms", "expert wall ms", "layer ms", "a2a B/rank",
                "spAG+spRS B/rank");
  }
  for (double s : {0.0, 0.8, 1.2, 1.6}) {
    for (int spare_slots : {0, spare}) {
      const moefold::Result r = moefold::run(s, spare_slots, world);
      if ((*runtime)->world_rank() == 0) {
        std::printf("%5.1f %-6s %9.3f %13.2f %12.2f %14.2f %9.2f %12.0f %16.0f\n", s,
                    spare_slots ? "fssdp" : "ep", r.max_over_mean, 1e3 * r.expert_cpu_seconds,
                    1e3 * r.mean_expert_cpu_seconds, 1e3 * r.expert_wall_seconds, 1e3 * r.layer_seconds, r.a2a_bytes,
                    r.sparse_bytes);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
