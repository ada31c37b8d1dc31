// ComputeTimer: adds the wall seconds and the calling thread's CPU seconds of its scope to a
// counter, for benchmarks and metrics of compute phases (the MoE layer's expert GEMMs).
// Measurement only: nothing decides anything from these numbers. On an oversubscribed machine
// (more ranks than cores) the CPU seconds are what the work takes on a core of its own, while the
// wall seconds also hold the time spent waiting for a core. On a GPU backend both time the launch
// only.
#pragma once

#include <time.h>

#include <chrono>

#include "tensor/wall_clock.h"

namespace moefold {

struct ComputeSeconds {
  double wall = 0, cpu = 0;
};

class ComputeTimer {
 public:
  explicit ComputeTimer(ComputeSeconds& total)
      : total_(total), start_(std::chrono::steady_clock::now()), cpu_start_(thread_cpu_seconds()) {}
  ~ComputeTimer() {
    total_.wall += seconds_since(start_);
    total_.cpu += thread_cpu_seconds() - cpu_start_;
  }
  ComputeTimer(const ComputeTimer&) = delete;
  ComputeTimer& operator=(const ComputeTimer&) = delete;

  static double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  }

 private:
  ComputeSeconds& total_;
  std::chrono::steady_clock::time_point start_;
  double cpu_start_;
};

}  // namespace moefold
