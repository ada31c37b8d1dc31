// StagingRing, the bookkeeping of the CUDA backend's pinned uploads: a region is handed out only
// once every earlier upload that used its bytes has completed, and waits happen only when the
// ring wraps onto uploads still in flight. The stream is simulated: tickets complete in order.
#include "tensor/staging_ring.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace moefold {
namespace {

TEST(StagingRing, UploadsThatFitNeverWait) {
  StagingRing ring(4096);
  for (int64_t t = 0; t < 16; ++t) {
    const auto region = ring.reserve(200);  // aligned to 256: 16 fit
    ASSERT_TRUE(region);
    EXPECT_EQ(region->offset, static_cast<size_t>(t) * 256);
    EXPECT_EQ(region->wait_for, -1);
    ring.commit(t);
  }
  EXPECT_EQ(ring.in_flight(), 16u);
}

TEST(StagingRing, WrappingWaitsForTheNewestOverlappedUpload) {
  StagingRing ring(1024);
  for (int64_t t = 0; t < 3; ++t) {  // [0,256) [256,512) [512,768)
    ASSERT_TRUE(ring.reserve(256));
    ring.commit(t);
  }
  // 512 bytes do not fit in [768,1024): the region wraps to 0, claiming the unused tail too,
  // and overlaps tickets 0 and 1; waiting for 1 covers 0 (one in-order stream).
  const auto region = ring.reserve(300);
  ASSERT_TRUE(region);
  EXPECT_EQ(region->offset, 0u);
  EXPECT_EQ(region->wait_for, 1);
  ring.commit(3);
  const auto next = ring.reserve(256);  // [512,768) still holds ticket 2
  ASSERT_TRUE(next);
  EXPECT_EQ(next->offset, 512u);
  EXPECT_EQ(next->wait_for, 2);
}

TEST(StagingRing, ArraysLargerThanTheRingAreNotStaged) {
  StagingRing ring(1024);
  EXPECT_FALSE(ring.reserve(1025));
  EXPECT_FALSE(ring.reserve(0));
  EXPECT_TRUE(ring.reserve(1024));
}

TEST(StagingRing, CommitWithoutReserveIsABug) {
  StagingRing ring(1024);
  EXPECT_ANY_THROW(ring.commit(0));
  ASSERT_TRUE(ring.reserve(10));
  EXPECT_ANY_THROW(ring.reserve(10));  // the last region was never committed
}

// Random sizes; a byte map records which ticket last wrote each byte. After the wait a region
// asks for, every ticket up to it has completed, and no byte of the region may belong to an
// upload still in flight; each wait is for a ticket not yet waited for.
TEST(StagingRing, NoRegionIsReusedWhileItsUploadIsInFlight) {
  constexpr size_t kCapacity = 8192;
  StagingRing ring(kCapacity);
  std::vector<int64_t> owner(kCapacity, -1);
  int64_t completed = -1;                         // every ticket ≤ this has completed
  std::mt19937 rng(5);
  std::uniform_int_distribution<size_t> size(1, 3000);
  int waits = 0;
  for (int64_t t = 0; t < 2000; ++t) {
    const size_t bytes = size(rng);
    const auto region = ring.reserve(bytes);
    ASSERT_TRUE(region);
    const size_t begin = region->offset, end = begin + bytes;
    ASSERT_LE(end, kCapacity);
    if (region->wait_for >= 0) {
      ASSERT_GT(region->wait_for, completed) << "a wait for a ticket already complete";
      ++waits;
      completed = region->wait_for;
    }
    for (size_t b = begin; b < end; ++b) {
      ASSERT_LE(owner[b], completed) << "byte " << b << " of ticket " << owner[b]
                                     << " reused by ticket " << t << " while in flight";
      owner[b] = t;
    }
    ring.commit(t);
  }
  EXPECT_GT(waits, 100);
}

}  // namespace
}  // namespace moefold
