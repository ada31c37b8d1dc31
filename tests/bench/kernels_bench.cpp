// Throughput of each CPU kernel, next to the measured single-thread sgemm peak of this machine
// (reported in the context header as sgemm_peak_gflops). GFLOP/s counters count the matrix
// products a kernel really executes; bytes/s count the data an element-wise kernel touches.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tensor/cpu/attention.h"
#include "tensor/cpu/cross_entropy.h"
#include "tensor/cpu/embedding.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/permute.h"
#include "tensor/cpu/rmsnorm.h"
#include "tensor/cpu/rope.h"
#include "tensor/cpu/router.h"
#include "tensor/cpu/swiglu.h"

namespace moefold::cpu {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

void set_gflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Sgemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto a = random_vector(n * n, 1), b = random_vector(n * n, 2);
  std::vector<float> c(n * n);
  for (auto _ : state) {
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_gflops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_Sgemm)->Arg(256)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);

// Linear layer of the benchmark model: N=4096 tokens, 512 → 1024. Arg: 0 fwd, 1 dx, 2 dw.
void BM_Linear(benchmark::State& state) {
  const int64_t N = 4096, I = 512, O = 1024;
  const auto x = random_vector(N * I, 3), w = random_vector(O * I, 4), dy = random_vector(N * O, 5);
  std::vector<float> y(N * O), dx(N * I), dw(O * I, 0.0f);
  for (auto _ : state) {
    switch (state.range(0)) {
      case 0: linear_forward(x.data(), w.data(), y.data(), N, I, O); break;
      case 1: linear_backward_dx(dy.data(), w.data(), dx.data(), N, I, O, false); break;
      default: linear_backward_dw(dy.data(), x.data(), dw.data(), N, I, O); break;
    }
  }
  set_gflops(state, 2.0 * N * I * O);
}
BENCHMARK(BM_Linear)->ArgName("fwd0_dx1_dw2")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

// 8 experts, 8192 routed rows with an uneven split, 512 → 1024 per expert.
void BM_GroupedLinear(benchmark::State& state) {
  const int64_t G = 8, I = 512, O = 1024;
  const std::vector<int64_t> offsets = {0, 1500, 2100, 3300, 4000, 5200, 6000, 7200, 8192};
  const int64_t N = offsets[G];
  const auto x = random_vector(N * I, 6), w = random_vector(G * O * I, 7);
  const auto dy = random_vector(N * O, 8);
  std::vector<float> y(N * O), dx(N * I), dw(G * O * I, 0.0f);
  for (auto _ : state) {
    switch (state.range(0)) {
      case 0: grouped_linear_forward(x.data(), w.data(), y.data(), offsets.data(), G, I, O); break;
      case 1:
        grouped_linear_backward_dx(dy.data(), w.data(), dx.data(), offsets.data(), G, I, O, false);
        break;
      default:
        grouped_linear_backward_dw(dy.data(), x.data(), dw.data(), offsets.data(), G, I, O);
        break;
    }
  }
  set_gflops(state, 2.0 * N * I * O);
}
BENCHMARK(BM_GroupedLinear)->ArgName("fwd0_dx1_dw2")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);

// Causal attention, B=4, S=1024, 8 heads of 64, kv heads = Arg(1). Arg(0): 0 fwd, 1 bwd.
// Executed matmul FLOPs: forward 2 products (QKᵀ, PV), backward 5, each 2·S²·d/2 per head.
void BM_Attention(benchmark::State& state) {
  const int64_t B = 4, S = 1024, nh = 8, nkv = state.range(1), d = 64;
  const auto q = random_vector(B * S * nh * d, 9), k = random_vector(B * S * nkv * d, 10);
  const auto v = random_vector(B * S * nkv * d, 11), dout = random_vector(B * S * nh * d, 12);
  std::vector<float> o(q.size()), lse(B * nh * S), dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<int32_t> pos(S);
  for (int64_t s = 0; s < S; ++s) pos[s] = static_cast<int32_t>(s);
  attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), pos.data(), pos.data(), B,
                    S, S, nh, nkv, d);
  const bool backward = state.range(0) == 1;
  for (auto _ : state) {
    if (backward) {
      attention_backward(dout.data(), q.data(), k.data(), v.data(), o.data(), lse.data(),
                         dq.data(), dk.data(), dv.data(), pos.data(), pos.data(), B, S, S, nh,
                         nkv, d);
    } else {
      attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), pos.data(),
                        pos.data(), B, S, S, nh, nkv, d);
    }
  }
  const double product = 2.0 * S * S * d / 2.0 * B * nh;
  set_gflops(state, product * (backward ? 5 : 2));
}
BENCHMARK(BM_Attention)
    ->ArgNames({"bwd", "nkv"})
    ->Args({0, 8})
    ->Args({1, 8})
    ->Args({0, 2})
    ->Args({1, 2})
    ->Unit(benchmark::kMillisecond);

// Fused LM-head cross-entropy, N=1024 rows, H=512, V=8192, chunks of 256 rows: 3 products.
void BM_CrossEntropyFused(benchmark::State& state) {
  const int64_t N = 1024, H = 512, V = 8192;
  const auto h = random_vector(N * H, 13), w = random_vector(V * H, 14);
  std::vector<int32_t> labels(N);
  for (int64_t n = 0; n < N; ++n) labels[n] = static_cast<int32_t>((n * 7919) % V);
  std::vector<float> dh(N * H), dw(V * H, 0.0f);
  double loss = 0.0;
  for (auto _ : state) {
    cross_entropy_forward_backward(h.data(), w.data(), labels.data(), nullptr, 1.0f / N, &loss,
                                   dh.data(), dw.data(), N, H, V, 256);
  }
  set_gflops(state, 3 * 2.0 * N * H * V);
}
BENCHMARK(BM_CrossEntropyFused)->Unit(benchmark::kMillisecond);

// Element-wise kernels over N=4096 tokens; bytes/s = data read + written once.
void BM_RmsNorm(benchmark::State& state) {
  const int64_t N = 4096, H = 512;
  const auto x = random_vector(N * H, 15), w = random_vector(H, 16), dy = random_vector(N * H, 17);
  std::vector<float> y(N * H), rstd(N), dx(N * H), dw(H, 0.0f);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
  for (auto _ : state) {
    if (state.range(0) == 0) {
      rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), N, H, 1e-5f);
    } else {
      rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), N, H,
                       false);
    }
  }
  state.SetBytesProcessed(state.iterations() * N * H * 4 * (state.range(0) == 0 ? 2 : 3));
}
BENCHMARK(BM_RmsNorm)->ArgName("bwd")->DenseRange(0, 1);

void BM_Rope(benchmark::State& state) {
  const int64_t N = 4096, heads = 8, d = 64;
  auto x = random_vector(N * heads * d, 18);
  std::vector<int32_t> pos(N);
  for (int64_t n = 0; n < N; ++n) pos[n] = static_cast<int32_t>(n % 1024);
  for (auto _ : state) rope_forward(x.data(), x.data(), pos.data(), N, heads, d, 10000.0f);
  state.SetBytesProcessed(state.iterations() * N * heads * d * 4 * 2);
}
BENCHMARK(BM_Rope);

void BM_SwiGlu(benchmark::State& state) {
  const int64_t n = 4096 * 1024;
  const auto gate = random_vector(n, 19), up = random_vector(n, 20), dout = random_vector(n, 21);
  std::vector<float> out(n), dgate(n), dup(n);
  for (auto _ : state) {
    if (state.range(0) == 0) {
      swiglu_forward(gate.data(), up.data(), out.data(), n);
    } else {
      swiglu_backward(dout.data(), gate.data(), up.data(), dgate.data(), dup.data(), n);
    }
  }
  state.SetBytesProcessed(state.iterations() * n * 4 * (state.range(0) == 0 ? 3 : 5));
}
BENCHMARK(BM_SwiGlu)->ArgName("bwd")->DenseRange(0, 1);

// Router of 4096 tokens over 64 experts: softmax then top-8.
void BM_RouterSoftmaxTopK(benchmark::State& state) {
  const int64_t N = 4096, E = 64, K = 8;
  const auto z = random_vector(N * E, 22);
  std::vector<float> p(N * E), val(N * K);
  std::vector<int32_t> idx(N * K);
  for (auto _ : state) {
    softmax_rows_forward(z.data(), p.data(), N, E);
    topk_rows(p.data(), N, E, K, idx.data(), val.data());
  }
  state.SetItemsProcessed(state.iterations() * N);
}
BENCHMARK(BM_RouterSoftmaxTopK);

// Dispatch bookkeeping and data movement of one MoE layer: 4096 tokens, top-2 of 8, H=512.
void BM_PermuteCombine(benchmark::State& state) {
  const int64_t N = 4096, K = 2, E = 8, H = 512;
  std::vector<int32_t> idx(N * K);
  for (int64_t a = 0; a < N * K; ++a) idx[a] = static_cast<int32_t>((a * 5 + a / K) % E);
  const auto x = random_vector(N * H, 23), weights = random_vector(N * K, 24);
  std::vector<int64_t> counts(E);
  std::vector<int32_t> perm(N * K);
  std::vector<float> rows(N * K * H), out(N * H);
  for (auto _ : state) {
    const int64_t R = build_expert_permutation(idx.data(), nullptr, N, K, E, counts.data(),
                                               perm.data());
    permute_tokens(x.data(), perm.data(), rows.data(), R, K, H);
    combine_tokens(rows.data(), perm.data(), weights.data(), out.data(), R, K, H);
  }
  state.SetBytesProcessed(state.iterations() * N * K * H * 4 * 4);
}
BENCHMARK(BM_PermuteCombine);

void BM_Embedding(benchmark::State& state) {
  const int64_t N = 4096, V = 32768, H = 512;
  const auto table = random_vector(V * H, 25);
  std::vector<int32_t> tokens(N);
  for (int64_t n = 0; n < N; ++n) tokens[n] = static_cast<int32_t>((n * 7919) % V);
  std::vector<float> out(N * H);
  for (auto _ : state) embedding_forward(tokens.data(), table.data(), out.data(), N, V, 0, V, H);
  state.SetBytesProcessed(state.iterations() * N * H * 4 * 2);
}
BENCHMARK(BM_Embedding);

}  // namespace
}  // namespace moefold::cpu

int main(int argc, char** argv) {
  // Single-thread figures: the peak and every kernel run with one BLAS thread.
  moefold::cpu::set_blas_threads(1);
  const double peak = moefold::cpu::measure_sgemm_gflops(1024, 1.0);
  benchmark::AddCustomContext("sgemm_peak_gflops_1thread", std::to_string(peak));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
