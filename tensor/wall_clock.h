// Wall-clock seconds for the timing counters (steps, waits, transfers). Measurement only:
// nothing decides anything from these numbers.
#pragma once

#include <chrono>

namespace moefold {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace moefold
