// Async work progresses while the caller computes: a large all-reduce is launched, then the
// calling thread only computes (it never calls MPI or wait) and watches is_done(). The
// collective must finish during the compute loop, driven by the communication thread alone.
// Timing is only reported, never asserted, so a loaded machine cannot make this flaky.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "parallel/mpi_communicator.h"

namespace moefold {
namespace {

using Clock = std::chrono::steady_clock;

// About a millisecond of arithmetic the compiler cannot drop.
double compute_chunk(double seed) {
  double x = seed;
  for (int i = 0; i < 200000; ++i) x = std::sin(x) + 1e-3 * i;
  return x;
}

TEST(OverlapTest, AsyncAllReduceProgressesDuringCompute) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  const int n = world->size();
  constexpr int64_t kCount = int64_t{1} << 22;  // 16 MiB of float per rank
  std::vector<float> data(kCount, static_cast<float>(world->rank() + 1));
  world->barrier();

  const Clock::time_point launched = Clock::now();
  WorkHandle handle = world->all_reduce_async(data.data(), kCount, CommDType::kFloat32,
                                              ReduceOp::kSum);
  // Generous safety cap: without a progress thread the loop would hit it.
  const Clock::time_point give_up = launched + std::chrono::seconds(120);
  int chunks = 0;
  double sink = 0;
  bool done_during_compute = false;
  Clock::time_point done_seen;
  while (Clock::now() < give_up) {
    sink += compute_chunk(sink + chunks);
    ++chunks;
    if (handle.is_done()) {
      done_during_compute = true;
      done_seen = Clock::now();
      break;
    }
  }
  const Clock::time_point compute_end = Clock::now();
  EXPECT_TRUE(done_during_compute) << "the all-reduce made no progress while the caller computed";
  EXPECT_GE(chunks, 1);
  EXPECT_TRUE(std::isfinite(sink));  // keeps the compute observable
  EXPECT_LE(done_seen, compute_end);
  handle.wait();
  const float expected = static_cast<float>(n * (n + 1) / 2);
  for (int64_t i = 0; i < kCount; i += 4099) ASSERT_EQ(data[i], expected);
  if (world->rank() == 0) {
    using std::chrono::duration;
    std::printf("overlap: %d ranks, all-reduce of %lld floats done %.1f ms after launch, seen "
                "after %d compute chunks\n",
                n, static_cast<long long>(kCount),
                duration<double, std::milli>(done_seen - launched).count(), chunks);
  }
}

}  // namespace
}  // namespace moefold
