// Forward+backward throughput of one MoE layer and of a small whole model, next to the measured
// single-thread sgemm rate of this machine (context: sgemm_peak_gflops). Model FLOPs are counted
// as 6·active parameters·tokens + causal attention 12·L·S²·H·B/2 (issue 3). Everything runs on
// one BLAS thread so the two figures compare.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/moe_layer.h"
#include "tensor/backend.h"

namespace moefold {
namespace {

double g_sgemm_gflops = 0.0;

// Issue 3's benchmark model: hidden 512, 8 experts top-2, F = 1024, seq 1024, 4 sequences.
ModelConfig bench_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 512;
  c.num_attention_heads = 8;
  c.ffn_hidden_size = 2048;
  c.vocab_size = 8192;
  c.seq_length = 1024;
  c.moe.num_experts = 8;
  c.moe.moe_ffn_hidden_size = 1024;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {1, 1};
  c.moe.moe_aux_loss_coeff = 1e-2f;
  return c;
}
constexpr int kBatch = 4;

void set_rates(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/iter"] = flops_per_iteration * 1e-9;
  state.counters["peak_MiB"] = MemoryStats::peak_bytes() / 1048576.0;
  // Fraction of the single-thread sgemm rate: (flops / seconds) / sgemm rate, as a rate counter.
  state.counters["of_sgemm"] = benchmark::Counter(
      flops_per_iteration * 1e-9 / g_sgemm_gflops, benchmark::Counter::kIsIterationInvariantRate);
}

std::vector<float> pseudo_random(int64_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / 16777216.0f - 0.5f;
  }
  return v;
}

void BM_MoeLayerForwardBackward(benchmark::State& state) {
  backend_for(Device::kCpu).set_threads(1);
  const ModelConfig config = bench_config();
  const ParallelContext ctx = ParallelContext::single_process();
  ParameterRegistry registry;
  MoeLayer moe(config, ctx, 0, registry);
  registry.init(1);
  const int64_t S = config.seq_length, N = kBatch * S, H = config.hidden_size;
  Tensor x = Tensor::from_vector({N, H}, pseudo_random(N * H, 1));
  Tensor dy = Tensor::from_vector({N, H}, pseudo_random(N * H, 2));
  Tensor y = Tensor::zeros({N, H}), dx = Tensor::zeros({N, H});
  MoeStash stash;
  MemoryStats::reset_peak();
  for (auto _ : state) {
    moe.forward(x, {kBatch, S}, 1.0, y, false, stash);
    moe.backward_dx(dy, dx, stash);
    moe.backward_dw(stash);
    benchmark::DoNotOptimize(dx.data());
  }
  set_rates(state, 6.0 * moe.active_parameter_count() * N);
}
BENCHMARK(BM_MoeLayerForwardBackward)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

void BM_ModelForwardBackward(benchmark::State& state) {
  backend_for(Device::kCpu).set_threads(1);
  const ModelConfig config = bench_config();
  Model model(config, ParallelContext::single_process());
  model.init_parameters(1);
  const int S = config.seq_length, N = kBatch * S;
  TokenBatch mb{kBatch, S, {}, {}, {}};
  for (int t = 0; t < N; ++t) {
    mb.tokens.push_back((t * 7919) % config.vocab_size);
    mb.labels.push_back((t * 104729 + 1) % config.vocab_size);
    mb.loss_mask.push_back(1.0f);
  }
  const LossScales scales{1.0 / N, 1.0};
  auto stash = model.make_stash();
  MemoryStats::reset_peak();
  for (auto _ : state) {
    model.forward(mb, scales, *stash);
    model.backward(*stash);
  }
  const double H = config.hidden_size, L = config.num_layers;
  const double flops = 6.0 * model.active_parameter_count() * N +
                       12.0 * L * static_cast<double>(S) * S * H * kBatch / 2.0;
  set_rates(state, flops);
}
BENCHMARK(BM_ModelForwardBackward)->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();

}  // namespace
}  // namespace moefold

int main(int argc, char** argv) {
  moefold::Backend& cpu = moefold::backend_for(moefold::Device::kCpu);
  cpu.set_threads(1);
  moefold::g_sgemm_gflops = cpu.measure_gemm_flops(1024, 1.0) / 1e9;
  benchmark::AddCustomContext("sgemm_peak_gflops",
                              std::to_string(moefold::g_sgemm_gflops) + " (1 thread, n=1024)");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
