// The bf16 attention of configs/gpu_bench.yaml on the GPU (one causal sequence of 4,096 tokens,
// 16 heads of 128; forward then backward, or forward alone): the flash kernels
// (tensor/cuda/flash_attention.cu) against the chunked cuBLAS path (tensor/cuda/attention_bf16.cu).
// TFLOP/s counts the causal half of the score matrix: 2 GEMMs forward, 5 backward. Each
// iteration ends with a device synchronisation. Skipped without a GPU.
//   moefold_bench_attention [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "tensor/backend.h"
#include "tensor/cuda_entry.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/bench/cuda_bench_main.h"

namespace moefold {
namespace {

Tensor bf16_filled(std::vector<int64_t> shape, float value) {
  Tensor wide = Tensor::empty(shape, DType::kFloat32, Device::kCuda);
  ops::fill(wide, value);
  Tensor narrow = Tensor::empty(std::move(shape), DType::kBFloat16, Device::kCuda);
  ops::cast(narrow, wide);
  return narrow;
}

// Args: sequence length, head dim, flash (1) or chunked (0), backward (1: forward then backward,
// 0: forward only).
void BM_CausalAttention(benchmark::State& state) {
#if MOEFOLD_HAVE_CUDA
  if (!has_backend(Device::kCuda)) {
    state.SkipWithError("no GPU on this machine");
    return;
  }
  const int64_t S = state.range(0), d = state.range(1), B = 1, nh = 2048 / d;
  Backend& backend = backend_for(Device::kCuda);
  set_cuda_flash_attention(state.range(2) != 0 ? FlashAttentionMode::kAlways
                                                : FlashAttentionMode::kNever);
  const ops::AttentionShape shape{B, S, S, nh, nh, d};
  std::vector<int32_t> pos(S);
  for (int64_t i = 0; i < S; ++i) pos[i] = static_cast<int32_t>(i);
  const Tensor q = bf16_filled({B, S, nh, d}, 0.5f), k = bf16_filled({B, S, nh, d}, 0.25f);
  const Tensor v = bf16_filled({B, S, nh, d}, 0.125f), dout = bf16_filled({B, S, nh, d}, 0.5f);
  const Tensor o = bf16_filled({B, S, nh, d}, 0.0f), dq = bf16_filled({B, S, nh, d}, 0.0f);
  const Tensor dk = bf16_filled({B, S, nh, d}, 0.0f), dv = bf16_filled({B, S, nh, d}, 0.0f);
  const Tensor lse = Tensor::empty({B, nh, S}, DType::kFloat32, Device::kCuda);
  const bool backward = state.range(3) != 0;
  const auto step = [&] {
    ops::attention_forward(q, k, v, o, lse, pos, pos, shape);
    if (backward) ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, pos, pos, shape);
  };
  step();  // warm-up: cuBLAS picks its kernels, the pool grows
  backend.synchronize();
  for (auto _ : state) {
    step();
    backend.synchronize();
  }
  set_cuda_flash_attention(flash_attention_mode(std::getenv("MOEFOLD_FLASH_ATTENTION")));
  const double gemms = backward ? 7.0 : 2.0;  // each 2·S²·d/2 per head
  const double flops = gemms * B * nh * d * S * S;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
#else
  state.SkipWithError("built without CUDA");
#endif
}
BENCHMARK(BM_CausalAttention)
    ->ArgNames({"seq", "head_dim", "flash", "backward"})
    ->ArgsProduct({{4096}, {128, 64}, {1, 0}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace moefold

int main(int argc, char** argv) { return moefold::run_cuda_benchmarks(argc, argv); }
