#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/vec_math.h"

#include <limits>

namespace moefold::cpu {

MOEFOLD_ISA_CLONES
float exp_shifted_sum(const float* x, float shift, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = exp_approx(x[i] - shift);
  float acc[kVecLanes] = {};
  int64_t i = 0;
  for (; i + kVecLanes <= n; i += kVecLanes) {
    for (int64_t j = 0; j < kVecLanes; ++j) acc[j] += out[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += out[i];
  for (int64_t j = 0; j < kVecLanes; ++j) sum += acc[j];
  return sum;
}

MOEFOLD_ISA_CLONES
float max_value(const float* x, int64_t n) {
  float acc[kVecLanes];
  for (int64_t j = 0; j < kVecLanes; ++j) acc[j] = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kVecLanes <= n; i += kVecLanes) {
    for (int64_t j = 0; j < kVecLanes; ++j) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  }
  float best = -std::numeric_limits<float>::infinity();
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (int64_t j = 0; j < kVecLanes; ++j) best = acc[j] > best ? acc[j] : best;
  return best;
}

MOEFOLD_ISA_CLONES
float dot(const float* a, const float* b, int64_t n) {
  float acc[kVecLanes] = {};
  int64_t i = 0;
  for (; i + kVecLanes <= n; i += kVecLanes) {
    for (int64_t j = 0; j < kVecLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int64_t j = 0; j < kVecLanes; ++j) sum += acc[j];
  return sum;
}

MOEFOLD_ISA_CLONES
void scale_in_place(float* y, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace moefold::cpu
