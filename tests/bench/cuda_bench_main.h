// main() of the GPU benchmarks: registers the CUDA backend on device 0 when a GPU is visible
// (each benchmark skips itself otherwise), then runs Google Benchmark.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>

#include "tensor/cuda_entry.h"

namespace moefold {

inline int run_cuda_benchmarks(int argc, char** argv) {
#if MOEFOLD_HAVE_CUDA
  if (cuda_device_count() > 0) {
    if (absl::Status s = register_cuda_device(0); !s.ok()) {
      std::fprintf(stderr, "cannot start the CUDA backend: %s\n", s.ToString().c_str());
      return 1;
    }
  }
#endif
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace moefold
