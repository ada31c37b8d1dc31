// TpRegion over TP = world. enter_backward: dx is this rank's rows (sequence parallel) or all
// rows of the sum over ranks of the partial dx_full, overwritten or accumulated; the overlapped
// work runs once, after the reduction is started and before dx is formed from it. The chunked
// exit equals the plain one.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/tp_communication.h"

namespace moefold {
namespace {

struct Case {
  bool sequence_parallel, accumulate;
};

class TpRegionBackward : public ::testing::TestWithParam<Case> {};

TEST_P(TpRegionBackward, SumsPartialsAndOverlapsTheWork) {
  const Case c = GetParam();
  const auto tp = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  const int P = tp->size(), me = tp->rank();
  constexpr int64_t kH = 3;
  const int64_t N = 2 * P, rows = c.sequence_parallel ? N / P : N;
  const TpRegion region{tp.get(), c.sequence_parallel};
  Tensor dx_full = Tensor::empty({N, kH});
  for (int64_t i = 0; i < N * kH; ++i) dx_full.data()[i] = float(me + 1) * float(i);
  Tensor dx = Tensor::empty({rows, kH}), scratch;
  for (int64_t i = 0; i < rows * kH; ++i) dx.data()[i] = 0.5f;
  int overlapped = 0;
  // The work runs before dx is formed, except that an overwriting reduce-scatter (sequence
  // parallel, not accumulating) receives straight into dx and may already have landed.
  const bool dx_written_by_the_collective = c.sequence_parallel && !c.accumulate;
  region.enter_backward(dx_full, dx, c.accumulate, scratch, [&] {
    ++overlapped;
    if (dx_written_by_the_collective) return;
    for (int64_t i = 0; i < rows * kH; ++i) ASSERT_EQ(dx.data()[i], 0.5f) << "dx written early";
  });
  EXPECT_EQ(overlapped, 1);
  const float ranks_sum = float(P * (P + 1) / 2);
  const int64_t first = c.sequence_parallel ? me * rows * kH : 0;
  for (int64_t i = 0; i < rows * kH; ++i) {
    const float expected = ranks_sum * float(first + i) + (c.accumulate ? 0.5f : 0.0f);
    ASSERT_EQ(dx.data()[i], expected) << "element " << i;
  }
}

// exit_forward_overlapped in 1, 2 or 4 row chunks (3 does not divide the rows: one chunk) equals
// the plain exit of the whole partial: the TP sum of every rank's partial rows, this rank's rows
// under sequence parallelism, overwritten or accumulated.
TEST_P(TpRegionBackward, ChunkedExitEqualsThePlainExit) {
  const Case c = GetParam();
  const auto tp = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  const int P = tp->size(), me = tp->rank();
  constexpr int64_t kH = 3;
  const int64_t N = 4 * P, rows = c.sequence_parallel ? N / P : N;
  const auto partial_value = [&](int64_t row, int64_t col) {
    return float((me + 1) * (row * kH + col) % 17) - 8.0f;
  };
  const auto compute = [&](int64_t first, int64_t count, const Tensor& out) {
    ASSERT_EQ(out.numel(), count * kH);
    for (int64_t r = 0; r < count; ++r)
      for (int64_t h = 0; h < kH; ++h) out.data()[r * kH + h] = partial_value(first + r, h);
  };
  for (int chunks : {1, 2, 3, 4}) {
    SCOPED_TRACE(chunks);
    TpRegion plain{tp.get(), c.sequence_parallel};
    TpRegion overlapped{tp.get(), c.sequence_parallel, chunks};
    Tensor full = Tensor::empty({N, kH}), y_plain = Tensor::empty({rows, kH}), scratch;
    Tensor y_overlapped = Tensor::empty({rows, kH}), buffer;
    for (Tensor* y : {&y_plain, &y_overlapped}) {
      for (int64_t i = 0; i < rows * kH; ++i) y->data()[i] = 0.25f * float(i);
    }
    compute(0, N, full);
    plain.exit_forward(full, y_plain, c.accumulate, scratch);
    overlapped.exit_forward_overlapped(N, compute, buffer, y_overlapped, c.accumulate, scratch);
    EXPECT_EQ(y_overlapped.to_vector(), y_plain.to_vector());
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, TpRegionBackward,
                         ::testing::Values(Case{false, false}, Case{false, true},
                                           Case{true, false}, Case{true, true}));

}  // namespace
}  // namespace moefold
