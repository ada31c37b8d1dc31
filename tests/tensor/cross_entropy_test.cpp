#include "tensor/cpu/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tensor/tensor.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::cpu {
namespace {

using moefold::testing::random_floats;
using moefold::testing::random_ints;

// Σ_n mask·CE in double, from logits = h wᵀ computed in double.
double reference_loss_sum(const std::vector<float>& h, const std::vector<float>& w,
                          const std::vector<int32_t>& labels, const std::vector<float>& mask,
                          int64_t N, int64_t H, int64_t V) {
  double total = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    if (mask[n] == 0.0f) continue;
    std::vector<double> logits(V);
    double max = -1e300;
    for (int64_t v = 0; v < V; ++v) {
      double dot = 0.0;
      for (int64_t c = 0; c < H; ++c) dot += static_cast<double>(h[n * H + c]) * w[v * H + c];
      logits[v] = dot;
      max = std::max(max, dot);
    }
    double sum = 0.0;
    for (double x : logits) sum += std::exp(x - max);
    total += mask[n] * (max + std::log(sum) - logits[labels[n]]);
  }
  return total;
}

struct Problem {
  int64_t N = 13, H = 6, V = 37;
  std::vector<float> h = random_floats(N * H, 1, -2.0f, 2.0f);
  std::vector<float> w = random_floats(V * H, 2, -1.0f, 1.0f);
  std::vector<int32_t> labels = random_ints(N, 3, 0, V);
  std::vector<float> mask = {1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1};
};

TEST(CrossEntropy, FusedLossMatchesDoubleReferenceForEveryChunkSize) {
  Problem p;
  p.labels[2] = -1;  // masked rows' labels are never read
  const double expected = reference_loss_sum(p.h, p.w, p.labels, p.mask, p.N, p.H, p.V);
  for (int64_t chunk : {1, 4, 13, 100}) {
    double loss = 0.0;
    cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(), 0.0f,
                                   &loss, nullptr, nullptr, p.N, p.H, p.V, chunk);
    EXPECT_NEAR(loss, expected, 1e-5 * std::abs(expected)) << "chunk " << chunk;
  }
}

TEST(CrossEntropy, ChunkedGradientsEqualUnchunked) {
  const Problem p;
  std::vector<float> dh_full(p.N * p.H), dw_full(p.V * p.H, 0.25f);
  double loss_full = 0.0;
  cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(), 0.1f,
                                 &loss_full, dh_full.data(), dw_full.data(), p.N, p.H, p.V, p.N);
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H, 0.25f);
  double loss = 0.0;
  cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(), 0.1f,
                                 &loss, dh.data(), dw.data(), p.N, p.H, p.V, 3);
  EXPECT_NEAR(loss, loss_full, 1e-5 * loss_full);
  moefold::testing::expect_close(dh, moefold::testing::to_double(dh_full), 1e-6, 1e-5, "dh");
  moefold::testing::expect_close(dw, moefold::testing::to_double(dw_full), 1e-6, 1e-5, "dw");
}

TEST(CrossEntropy, FusedGradientsMatchFiniteDifferences) {
  Problem p;
  const float grad_scale = 0.5f;
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H, 0.0f);
  double loss = 0.0;
  cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(),
                                 grad_scale, &loss, dh.data(), dw.data(), p.N, p.H, p.V, 4);
  auto scaled_loss = [&] {
    double value = 0.0;
    cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(), 0.0f,
                                   &value, nullptr, nullptr, p.N, p.H, p.V, 4);
    return grad_scale * value;
  };
  moefold::testing::expect_gradient_matches(p.h, dh, scaled_loss, 1e-2f, 1e-3, 2e-3, "dh");
  moefold::testing::expect_gradient_matches(p.w, dw, scaled_loss, 1e-2f, 1e-3, 2e-3, "dw");
}

TEST(CrossEntropy, OnlyOneChunkOfLogitsIsAllocated) {
  const Problem p;
  std::vector<float> dh(p.N * p.H), dw(p.V * p.H, 0.0f);
  double loss = 0.0;
  MemoryStats::reset_peak();
  const int64_t before = MemoryStats::current_bytes();
  cross_entropy_forward_backward(p.h.data(), p.w.data(), p.labels.data(), p.mask.data(), 1.0f,
                                 &loss, dh.data(), dw.data(), p.N, p.H, p.V, 4);
  EXPECT_EQ(MemoryStats::peak_bytes() - before, 4 * p.V * static_cast<int64_t>(sizeof(float)));
  EXPECT_EQ(MemoryStats::current_bytes(), before);
}

TEST(CrossEntropy, RowsFormMatchesFusedAndItsBackwardMatchesFiniteDifferences) {
  const int64_t N = 5, V = 11;
  auto logits = random_floats(N * V, 4, -4.0f, 4.0f);
  const std::vector<int32_t> labels = {3, 0, 10, 7, 7};
  const std::vector<float> mask = {1, 0, 1, 1, 1};
  std::vector<float> loss(N);
  cross_entropy_rows(logits.data(), labels.data(), mask.data(), loss.data(), N, V);
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[n * V + v]));
    const double expected = mask[n] * (std::log(sum) - logits[n * V + labels[n]]);
    EXPECT_NEAR(loss[n], expected, 1e-5) << "row " << n;
  }

  std::vector<float> dlogits(N * V);
  cross_entropy_rows_backward(logits.data(), labels.data(), mask.data(), 2.0f, dlogits.data(), N,
                              V);
  auto total = [&] {
    std::vector<float> l(N);
    cross_entropy_rows(logits.data(), labels.data(), mask.data(), l.data(), N, V);
    double sum = 0.0;
    for (float x : l) sum += 2.0 * x;
    return sum;
  };
  moefold::testing::expect_gradient_matches(logits, dlogits, total, 1e-2f, 1e-3, 2e-3,
                                            "dlogits");
  auto in_place = logits;
  cross_entropy_rows_backward(in_place.data(), labels.data(), mask.data(), 2.0f, in_place.data(),
                              N, V);
  EXPECT_EQ(in_place, dlogits);
}

}  // namespace
}  // namespace moefold::cpu
