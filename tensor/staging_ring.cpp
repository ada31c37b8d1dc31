#include "tensor/staging_ring.h"

#include "tensor/check.h"

namespace moefold {

std::optional<StagingRing::Region> StagingRing::reserve(size_t bytes) {
  MOEFOLD_CHECK(regions_.empty() || regions_.back().ticket >= 0,
                "StagingRing: the last region was never committed");
  const size_t size = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (size == 0 || size > capacity_) return std::nullopt;
  // The span claimed from the head: [head, end) or, when the region does not fit before the end
  // of the ring, the unused tail [head, capacity) and [0, size) (regions never straddle the end).
  const bool wrap = head_ + size > capacity_;
  const size_t begin = wrap ? 0 : head_, end = begin + size;
  auto claimed = [&](const InFlight& r) {
    return wrap ? (r.end > head_ || r.begin < end) : (r.begin < end && r.end > begin);
  };
  // Regions were taken one after the other from the head, so the oldest lie just ahead of it:
  // the ones the span overlaps are a prefix of the queue, and on an in-order stream the newest
  // of them is the only one to wait for.
  Region region{begin, -1};
  while (!regions_.empty() && claimed(regions_.front())) {
    region.wait_for = regions_.front().ticket;
    regions_.pop_front();
  }
  regions_.push_back({begin, end, -1});
  head_ = end;
  return region;
}

void StagingRing::commit(int64_t ticket) {
  MOEFOLD_CHECK(!regions_.empty() && regions_.back().ticket < 0 && ticket >= 0,
                "StagingRing: commit without a reserved region");
  regions_.back().ticket = ticket;
}

}  // namespace moefold
