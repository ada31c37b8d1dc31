// A run of consecutive elements of a tensor's local box (row-major over the box), as the global
// hyperslabs that HDF5 selects and the checksum adds up. The distributed optimizer holds each
// parameter's Adam state as such runs (its 1/DP share of a flattened bucket), so a checkpoint
// can write and read exactly those elements, at their places in the global tensor, with no
// full-size copy on any rank.
#pragma once

#include <cstdint>
#include <vector>

namespace moefold {

// One box of the global tensor covered by a run, and where its elements sit in the run's data.
struct RunSlab {
  std::vector<int64_t> start;  // global index of its first element, per axis
  std::vector<int64_t> count;  // extent per axis
  int64_t data_offset = 0;     // its first element's position in the run's contiguous data
};

// Elements [begin, begin + numel) of the box [box_offset, box_offset + box_shape) of a global
// tensor, counted row-major over the box, as at most 2·ndim slabs in row-major order: the
// elements of slab i follow those of slab i-1 in the run's data, and within a slab they are
// row-major. A box's row-major order is the global row-major order restricted to it, so HDF5's
// iteration over the union of the slabs meets the run's elements in the run's order.
std::vector<RunSlab> run_slabs(const std::vector<int64_t>& box_offset,
                               const std::vector<int64_t>& box_shape, int64_t begin,
                               int64_t numel);

}  // namespace moefold
