// Vectorisation is asked for explicitly: at -O2 GCC 12 only vectorises trivially cheap loops.
#pragma GCC optimize("tree-vectorize")

#include "tensor/cpu/vec_math.h"

#include <limits>

#define MOEFOLD_ISA_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace moefold::cpu {
namespace {

// Partial sums in kLanes independent accumulators: vectorisable without reassociation flags,
// and more accurate than one running sum.
constexpr int64_t kLanes = 16;

}  // namespace

MOEFOLD_ISA_CLONES
float exp_shifted_sum(const float* x, float shift, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_approx(x[i] - shift);
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += out[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += out[i];
  for (int64_t j = 0; j < kLanes; ++j) sum += acc[j];
  return sum;
}

MOEFOLD_ISA_CLONES
float max_value(const float* x, int64_t n) {
  float acc[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) acc[j] = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  }
  float best = -std::numeric_limits<float>::infinity();
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (int64_t j = 0; j < kLanes; ++j) best = acc[j] > best ? acc[j] : best;
  return best;
}

MOEFOLD_ISA_CLONES
float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int64_t j = 0; j < kLanes; ++j) sum += acc[j];
  return sum;
}

MOEFOLD_ISA_CLONES
void scale_in_place(float* y, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace moefold::cpu
