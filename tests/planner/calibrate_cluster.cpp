// Measures this machine for clusters/this_machine.yaml: the single-thread sgemm rate by GEMM
// size (the efficiency curve, relative to the 512³ rate), the memory bandwidth of a streaming
// copy, and MPI shared-memory latency and bandwidth between two ranks. GEMMs and copies run on
// every rank at once, as in training (ranks share caches, memory and clock headroom); each figure
// is the slowest rank's. Prints the numbers as the YAML keys they calibrate. On a quiet machine:
//   mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 build/tests/planner/moefold_calibrate_cluster
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of a few repetitions: the machine is shared, the fastest run is the machine's rate.
template <typename F>
double best_seconds(F&& body, int repeats) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now();
    body();
    best = std::min(best, now() - t0);
  }
  return best;
}

double sgemm_gflops(int m, int n, int k) {
  using moefold::Tensor;
  const Tensor a = Tensor::empty({m, k}), b = Tensor::empty({n, k}), c = Tensor::empty({m, n});
  a.fill(0.5f);
  b.fill(0.25f);
  const int calls = std::max(1, int(2e8 / (2.0 * m * n * k)));
  const double s = best_seconds(
      [&] {
        for (int i = 0; i < calls; ++i) moefold::ops::linear_forward(a, b, c);
      },
      5);
  return 2.0 * m * n * k * calls / s / 1e9;
}

double copy_bandwidth() {
  const size_t n = size_t(32) << 20;  // 128 MiB of floats each way
  std::vector<float> src(n, 1.0f), dst(n);
  const double s = best_seconds([&] { std::memcpy(dst.data(), src.data(), n * sizeof(float)); }, 5);
  return 2.0 * n * sizeof(float) / s;  // read + write
}

// Half a round trip of `bytes` between ranks 0 and 1.
double ping_pong(int rank, size_t bytes, int repeats) {
  std::vector<char> buffer(std::max<size_t>(bytes, 1));
  MPI_Barrier(MPI_COMM_WORLD);
  return best_seconds(
             [&] {
               for (int i = 0; i < repeats; ++i) {
                 if (rank == 0) {
                   MPI_Send(buffer.data(), int(bytes), MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                   MPI_Recv(buffer.data(), int(bytes), MPI_BYTE, 1, 0, MPI_COMM_WORLD,
                            MPI_STATUS_IGNORE);
                 } else if (rank == 1) {
                   MPI_Recv(buffer.data(), int(bytes), MPI_BYTE, 0, 0, MPI_COMM_WORLD,
                            MPI_STATUS_IGNORE);
                   MPI_Send(buffer.data(), int(bytes), MPI_BYTE, 0, 0, MPI_COMM_WORLD);
                 }
               }
             },
             5) /
         (2.0 * repeats);
}

}  // namespace

// The slowest rank's value of a rate every rank measures at the same time.
double on_every_rank(double (*measure)()) {
  MPI_Barrier(MPI_COMM_WORLD);
  double rate = measure(), slowest = 0;
  MPI_Allreduce(&rate, &slowest, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  return slowest;
}

template <int D>
double square_rate() {
  return D == 512 ? sgemm_gflops(512, 512, 512) : sgemm_gflops(D, 4 * D, 4 * D);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  moefold::backend_for(moefold::Device::kCpu).set_threads(1);
  double latency = 0, bandwidth = 0;
  if (size >= 2) {
    latency = ping_pong(rank, 8, 2000);
    const size_t big = size_t(8) << 20;
    bandwidth = big / (ping_pong(rank, big, 20) - latency);
  }
  const double peak = on_every_rank(square_rate<512>);
  const double alone = rank == 0 ? sgemm_gflops(512, 512, 512) : 0;
  MPI_Barrier(MPI_COMM_WORLD);
  const double bandwidth_copy = on_every_rank(copy_bandwidth);
  const std::vector<std::pair<int, double>> curve = {
      {16, on_every_rank(square_rate<16>)},   {32, on_every_rank(square_rate<32>)},
      {64, on_every_rank(square_rate<64>)},   {128, on_every_rank(square_rate<128>)},
      {256, on_every_rank(square_rate<256>)}, {1024, on_every_rank(square_rate<1024>)}};
  if (rank == 0) {
    std::printf("# measured by moefold_calibrate_cluster (%d rank(s) computing at once)\n", size);
    std::printf("peak_flops: %.4g          # sgemm 512^3, one BLAS thread per rank\n", peak * 1e9);
    std::printf("# one rank alone: %.4g; the trainer's start-up estimate: %.4g\n", alone * 1e9,
                moefold::backend_for(moefold::Device::kCpu).measure_gemm_flops(512, 0.3));
    std::printf("memory_bandwidth: %.4g\n", bandwidth_copy);
    std::printf("gemm_efficiency:  # [smallest dimension, rate / peak]; m x n x k = d x 4d x 4d\n");
    for (const auto& [d, rate] : curve) std::printf("  - [%d, %.3f]\n", d, rate / peak);
    if (size >= 2) {
      std::printf("intra_node: {bandwidth: %.4g, latency: %.4g}\n", bandwidth, latency);
    }
  }
  MPI_Finalize();
  return 0;
}
