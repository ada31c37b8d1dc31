// The bookkeeping of a ring of pinned host memory through which a device backend uploads host
// arrays. CUDA copies from pageable memory may synchronise the host with the stream; copies from
// pinned memory do not, but the pinned bytes must stay untouched until the copy has run. Each
// upload takes the next free region of the ring and leaves a ticket (an event recorded after its
// copy); a region is reused only after the ticket of the newest upload that overlaps it has
// completed, which on one in-order stream means every older upload has too. The waits therefore
// happen only when the ring wraps onto copies still in flight. Device-independent, so the CPU
// tests check it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

namespace moefold {

class StagingRing {
 public:
  static constexpr size_t kAlignment = 256;

  explicit StagingRing(size_t capacity) : capacity_(capacity) {}

  struct Region {
    size_t offset = 0;
    // The ticket the caller must wait for before writing the region, or -1 when none.
    int64_t wait_for = -1;
  };
  // A region of `bytes` (aligned), or nothing when the ring is too small for it (the caller then
  // copies without staging). Call commit() with the copy's ticket right after issuing the copy.
  std::optional<Region> reserve(size_t bytes);
  void commit(int64_t ticket);

  size_t capacity() const { return capacity_; }
  size_t in_flight() const { return regions_.size(); }

 private:
  struct InFlight {
    size_t begin, end;
    int64_t ticket;
  };
  size_t capacity_;
  size_t head_ = 0;  // the next free offset
  std::deque<InFlight> regions_;  // oldest first; ticket -1 until committed
};

}  // namespace moefold
