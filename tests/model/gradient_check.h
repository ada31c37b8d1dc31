// Finite-difference helpers for the model tests. The model computes in float32, so derivatives
// are checked two ways: per element (central differences) and along a random direction over a
// whole tensor (averages out float32 rounding, so it can be held to a tight tolerance).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "parallel/context.h"

namespace moefold::testing {

inline ParallelContext test_context() { return ParallelContext::single_process(); }

inline std::vector<float> random_vector(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// Central difference of loss() with respect to values[i].
inline double numeric_derivative(const std::function<double()>& loss, float* values, int64_t i,
                                 double eps) {
  const float saved = values[i];
  values[i] = static_cast<float>(saved + eps);
  const double plus = loss();
  values[i] = static_cast<float>(saved - eps);
  const double minus = loss();
  values[i] = saved;
  return (plus - minus) / (2.0 * eps);
}

// d/dε loss(values + ε·dir) at ε = 0, by central differences.
inline double numeric_directional(const std::function<double()>& loss, float* values,
                                  const std::vector<float>& dir, double eps) {
  const int64_t n = static_cast<int64_t>(dir.size());
  std::vector<float> saved(values, values + n);
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>(saved[i] + eps * dir[i]);
  const double plus = loss();
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>(saved[i] - eps * dir[i]);
  const double minus = loss();
  for (int64_t i = 0; i < n; ++i) values[i] = saved[i];
  return (plus - minus) / (2.0 * eps);
}

inline double dot(const float* a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < b.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// |a − b| ≤ rtol·max(|a|,|b|) + atol.
inline bool close(double a, double b, double rtol, double atol) {
  return std::abs(a - b) <= rtol * std::max(std::abs(a), std::abs(b)) + atol;
}

}  // namespace moefold::testing
