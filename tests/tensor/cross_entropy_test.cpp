// The fused LM-head cross-entropy through the seam (tensor/ops.h) against a float64 reference and
// finite differences; the CPU backend's row form (which the seam composes differently) is tested
// on its own at the end.
#include "tensor/cpu/cross_entropy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/ops.h"
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

  // Σ mask·CE through ops::cross_entropy_forward_backward; dh is overwritten and dw accumulated
  // when grad_scale != 0 and they are defined.
  double fused(float grad_scale, const Tensor& dh, const Tensor& dw, int64_t chunk) const {
    return ops::cross_entropy_forward_backward(Tensor::from_vector({N, H}, h),
                                               Tensor::from_vector({V, H}, w), labels, mask,
                                               grad_scale, dh, dw, chunk);
  }
};

TEST(CrossEntropy, FusedLossMatchesDoubleReferenceForEveryChunkSize) {
  Problem p;
  p.labels[2] = -1;  // masked rows' labels are never read
  const double expected = reference_loss_sum(p.h, p.w, p.labels, p.mask, p.N, p.H, p.V);
  for (int64_t chunk : {1, 4, 13, 100}) {
    const double loss = p.fused(0.0f, Tensor(), Tensor(), chunk);
    EXPECT_NEAR(loss, expected, 1e-5 * std::abs(expected)) << "chunk " << chunk;
  }
}

TEST(CrossEntropy, ChunkedGradientsEqualUnchunked) {
  const Problem p;
  const std::vector<float> quarter(p.V * p.H, 0.25f);
  const Tensor dh_full = Tensor::zeros({p.N, p.H});
  const Tensor dw_full = Tensor::from_vector({p.V, p.H}, quarter);
  const double loss_full = p.fused(0.1f, dh_full, dw_full, p.N);
  const Tensor dh = Tensor::zeros({p.N, p.H}), dw = Tensor::from_vector({p.V, p.H}, quarter);
  const double loss = p.fused(0.1f, dh, dw, 3);
  EXPECT_NEAR(loss, loss_full, 1e-5 * loss_full);
  moefold::testing::expect_close(dh.to_vector(), moefold::testing::to_double(dh_full.to_vector()),
                                 1e-6, 1e-5, "dh");
  moefold::testing::expect_close(dw.to_vector(), moefold::testing::to_double(dw_full.to_vector()),
                                 1e-6, 1e-5, "dw");
}

TEST(CrossEntropy, FusedGradientsMatchFiniteDifferences) {
  Problem p;
  const float grad_scale = 0.5f;
  const Tensor dh = Tensor::zeros({p.N, p.H}), dw = Tensor::zeros({p.V, p.H});
  p.fused(grad_scale, dh, dw, 4);
  auto scaled_loss = [&] { return grad_scale * p.fused(0.0f, Tensor(), Tensor(), 4); };
  moefold::testing::expect_gradient_matches(p.h, dh.to_vector(), scaled_loss, 1e-2f, 1e-3, 2e-3,
                                            "dh");
  moefold::testing::expect_gradient_matches(p.w, dw.to_vector(), scaled_loss, 1e-2f, 1e-3, 2e-3,
                                            "dw");
}

TEST(CrossEntropy, OnlyOneChunkOfLogitsIsAllocated) {
  const Problem p;
  const Tensor h = Tensor::from_vector({p.N, p.H}, p.h), w = Tensor::from_vector({p.V, p.H}, p.w);
  const Tensor dh = Tensor::zeros({p.N, p.H}), dw = Tensor::zeros({p.V, p.H});
  const Tensor loss_sum = ops::float64_zeros(1, Device::kCpu);
  MemoryStats::reset_peak();
  const int64_t before = MemoryStats::current_bytes();
  ops::cross_entropy_forward_backward(h, w, p.labels, p.mask, 1.0f, dh, dw, 4, loss_sum);
  EXPECT_EQ(MemoryStats::peak_bytes() - before, 4 * p.V * static_cast<int64_t>(sizeof(float)));
  EXPECT_EQ(MemoryStats::current_bytes(), before);
}

// The vocabulary-parallel pieces over two shards of the vocabulary, with the reductions over the
// shards done here as lm_head's all-reduces do them: the loss against the float64 reference and
// the logits' gradient against the rows form's.
TEST(CrossEntropy, VocabParallelPiecesOverTwoShardsMatchTheWholeVocabulary) {
  const Problem p;
  const int64_t split = 20, firsts[2] = {0, split}, widths[2] = {split, p.V - split};
  const Tensor h = Tensor::from_vector({p.N, p.H}, p.h), w = Tensor::from_vector({p.V, p.H}, p.w);
  Tensor z[2], row_max[2];
  std::vector<float> max(p.N, -INFINITY);
  for (int s = 0; s < 2; ++s) {
    z[s] = Tensor::empty({p.N, widths[s]});
    row_max[s] = Tensor::empty({p.N});
    ops::linear_forward(h, w.slice_rows(firsts[s], firsts[s] + widths[s]), z[s]);
    ops::rows_max(z[s], row_max[s], p.N);
    for (int64_t n = 0; n < p.N; ++n) max[n] = std::max(max[n], row_max[s].data()[n]);
  }
  const Tensor reduced_max = Tensor::from_vector({p.N}, max);
  const Tensor reduced = ops::float64_zeros(2 * p.N, Device::kCpu);  // sums, then label logits
  for (int s = 0; s < 2; ++s) {
    const Tensor mine = ops::float64_zeros(2 * p.N, Device::kCpu);
    double* sums = ops::float64_data(mine);
    ops::exp_shifted_rows(z[s], reduced_max, p.labels, p.mask, sums, sums + p.N, firsts[s]);
    for (int64_t i = 0; i < 2 * p.N; ++i) ops::float64_data(reduced)[i] += sums[i];
  }
  const double* totals = ops::float64_data(reduced);
  const Tensor loss_sum = ops::float64_zeros(1, Device::kCpu);
  ops::vocab_parallel_loss(reduced_max, totals, totals + p.N, p.mask, p.N, loss_sum);
  const double expected = reference_loss_sum(p.h, p.w, p.labels, p.mask, p.N, p.H, p.V);
  EXPECT_NEAR(ops::float64_to_host(loss_sum)[0], expected, 1e-5 * std::abs(expected));

  const Tensor logits = Tensor::empty({p.N, p.V});
  ops::linear_forward(h, w, logits);
  std::vector<float> expected_grad(p.N * p.V);
  cross_entropy_rows_backward(logits.data(), p.labels.data(), p.mask.data(), 0.5f,
                              expected_grad.data(), p.N, p.V);
  for (int s = 0; s < 2; ++s) {
    ops::softmax_gradient_rows(z[s], totals, p.labels, p.mask, 0.5f, firsts[s]);
    for (int64_t n = 0; n < p.N; ++n) {
      for (int64_t v = 0; v < widths[s]; ++v) {
        EXPECT_NEAR(z[s].data()[n * widths[s] + v], expected_grad[n * p.V + firsts[s] + v], 1e-6)
            << "row " << n << " column " << firsts[s] + v;
      }
    }
  }
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
