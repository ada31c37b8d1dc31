// The expert GEMMs of one MoE layer's step on the GPU (forward, dx, dW): the grouped ops (one
// cublasGemmGroupedBatchedEx per op where the operand types allow it, tensor/cuda/gemm.cu)
// against the same products as one dense linear op per expert (one cublasGemmEx each). bf16 runs
// as training does (bf16 operands, float32 dW); float32 runs everything in float32. The rows per
// expert are uneven, some experts empty. Each iteration ends with a device synchronisation.
// Skipped without a GPU.
//   moefold_bench_expert_gemm [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/bench/cuda_bench_main.h"

namespace moefold {
namespace {

constexpr int64_t kRows = 8192, kIn = 1024, kOut = 768;

// Rows per expert falling off with the expert's index (a skewed router), every fifth empty.
std::vector<int64_t> uneven_offsets(int64_t G) {
  std::vector<int64_t> weight(G), offsets = {0};
  int64_t total = 0;
  for (int64_t g = 0; g < G; ++g) {
    weight[g] = g % 5 == 4 ? 0 : 2 * G - g;
    total += weight[g];
  }
  for (int64_t g = 0; g < G; ++g) {
    offsets.push_back(g + 1 == G ? kRows : offsets.back() + kRows * weight[g] / total);
  }
  return offsets;
}

Tensor filled(std::vector<int64_t> shape, DType dtype, float value) {
  Tensor wide = Tensor::empty(shape, DType::kFloat32, Device::kCuda);
  ops::fill(wide, value);
  if (dtype == DType::kFloat32) return wide;
  Tensor narrow = Tensor::empty(std::move(shape), dtype, Device::kCuda);
  ops::cast(narrow, wide);
  return narrow;
}

// Args: experts, bf16 (1) or float32 (0), grouped (1) or one linear per expert (0).
void BM_ExpertGemms(benchmark::State& state) {
  if (!has_backend(Device::kCuda)) {
    state.SkipWithError("no GPU on this machine");
    return;
  }
  const int64_t G = state.range(0);
  const DType dtype = state.range(1) ? DType::kBFloat16 : DType::kFloat32;
  const bool grouped = state.range(2) != 0;
  const std::vector<int64_t> offsets = uneven_offsets(G);
  const Tensor x = filled({kRows, kIn}, dtype, 0.5f), w = filled({G, kOut, kIn}, dtype, 0.25f);
  const Tensor y = filled({kRows, kOut}, dtype, 0.0f), dy = filled({kRows, kOut}, dtype, 0.125f);
  const Tensor dx = filled({kRows, kIn}, dtype, 0.0f);
  const Tensor dw = filled({G, kOut, kIn}, DType::kFloat32, 0.0f);
  const auto step = [&] {
    if (grouped) {
      ops::grouped_linear_forward(x, w, y, offsets);
      ops::grouped_linear_backward_dx(dy, w, dx, offsets, false);
      ops::grouped_linear_backward_dw(dy, x, dw, offsets);
      return;
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t begin = offsets[g], end = offsets[g + 1];
      if (begin == end) continue;
      const Tensor wg = w.slice_rows(g, g + 1).view({kOut, kIn});
      const Tensor dwg = dw.slice_rows(g, g + 1).view({kOut, kIn});
      ops::linear_forward(x.slice_rows(begin, end), wg, y.slice_rows(begin, end));
      ops::linear_backward_dx(dy.slice_rows(begin, end), wg, dx.slice_rows(begin, end), false);
      ops::linear_backward_dw(dy.slice_rows(begin, end), x.slice_rows(begin, end), dwg);
    }
  };
  step();  // warm-up: cuBLAS picks its kernels
  backend_for(Device::kCuda).synchronize();
  for (auto _ : state) {
    step();
    backend_for(Device::kCuda).synchronize();
  }
  const double flops = 3 * 2.0 * kRows * kIn * kOut;
  state.counters["TFLOP/s"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ExpertGemms)
    ->ArgNames({"experts", "bf16", "grouped"})
    ->ArgsProduct({{16, 64}, {1, 0}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace moefold

int main(int argc, char** argv) { return moefold::run_cuda_benchmarks(argc, argv); }
