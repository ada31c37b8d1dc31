// TpRegion::enter_backward over TP = world: dx is this rank's rows (sequence parallel) or all
// rows of the sum over ranks of the partial dx_full, overwritten or accumulated; the overlapped
// work runs once, while the reduction is in flight (before dx is written).
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
  region.enter_backward(dx_full, dx, c.accumulate, scratch, [&] {
    ++overlapped;
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

INSTANTIATE_TEST_SUITE_P(Cases, TpRegionBackward,
                         ::testing::Values(Case{false, false}, Case{false, true},
                                           Case{true, false}, Case{true, true}));

}  // namespace
}  // namespace moefold
