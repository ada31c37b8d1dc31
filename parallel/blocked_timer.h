// BlockedTimer: adds the wall seconds of its scope to a counter, for the metrics of time the
// caller spends blocked in communication (gradient reductions, parameter gathers, EP exchanges).
// Measurement only: nothing decides anything from these numbers.
#pragma once

#include <chrono>

#include "tensor/wall_clock.h"

namespace moefold {

class BlockedTimer {
 public:
  explicit BlockedTimer(double& total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~BlockedTimer() { total_ += seconds_since(start_); }
  BlockedTimer(const BlockedTimer&) = delete;
  BlockedTimer& operator=(const BlockedTimer&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moefold
