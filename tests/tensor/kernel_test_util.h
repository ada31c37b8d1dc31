// Helpers for the CPU kernel tests: seeded random inputs and a central finite-difference check.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "tensor/kernel_math.h"

namespace moefold::testing {

// Uniform values in [lo, hi), bounded away from zero by construction of the range users pick.
inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(n);
  for (float& v : values) v = dist(gen);
  return values;
}

// x rounded to bf16 (nearest even), as a device stores it.
inline float round_bf16(float x) { return bf16_bits_to_float(float_to_bf16_bits(x)); }

// random_floats in [-1, 1), each a bf16 value.
inline std::vector<float> bf16_values(size_t n, uint32_t seed) {
  std::vector<float> values = random_floats(n, seed);
  for (float& v : values) v = round_bf16(v);
  return values;
}

// Token positions: first, first + 1, ..., or with a stride coprime to n from 0 a permutation
// of 0..n-1 (attention in any order).
inline std::vector<int32_t> positions(int64_t n, int32_t first, int32_t stride = 1) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = static_cast<int32_t>(stride == 1 ? first + i : (i * stride) % n);
  }
  return p;
}

inline std::vector<int32_t> random_ints(size_t n, uint32_t seed, int32_t lo, int32_t hi) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  std::vector<int32_t> values(n);
  for (int32_t& v : values) v = dist(gen);
  return values;
}

inline std::vector<double> to_double(const std::vector<float>& values) {
  return {values.begin(), values.end()};
}

// Every element of `actual` within atol + rtol·|expected| of `expected`.
template <typename A, typename E>
void expect_close(const std::vector<A>& actual, const std::vector<E>& expected, double atol,
                  double rtol, const char* what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    ASSERT_NEAR(a, e, atol + rtol * std::abs(e)) << what << " element " << i;
  }
}

// Compares `analytic` (d loss / d x) with central differences of `loss`, which must read the
// current contents of `x`. Every element is checked (x is restored afterwards).
inline void expect_gradient_matches(std::vector<float>& x, const std::vector<float>& analytic,
                                    const std::function<double()>& loss, float eps, double atol,
                                    double rtol, const char* what) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    const float up = saved + eps, down = saved - eps;  // the steps as actually represented
    x[i] = up;
    const double plus = loss();
    x[i] = down;
    const double minus = loss();
    x[i] = saved;
    const double numeric = (plus - minus) / (static_cast<double>(up) - down);
    ASSERT_NEAR(analytic[i], numeric, atol + rtol * std::abs(numeric))
        << what << " element " << i;
  }
}

// Σ a·b in double: the scalar "loss" Σ dy·y whose gradient a backward kernel returns for dy.
inline double weighted_sum(const std::vector<float>& a, const std::vector<float>& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

}  // namespace moefold::testing
