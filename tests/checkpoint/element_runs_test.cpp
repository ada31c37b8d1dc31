// run_slabs (element_runs.h): every run of every box, swept exhaustively for small shapes, is
// covered by slabs whose row-major elements are exactly the run's, in the run's order.
#include "checkpoint/element_runs.h"

#include <gtest/gtest.h>

#include <vector>

namespace moefold {
namespace {

// Row-major global index of each element of `slab`, in order.
std::vector<int64_t> slab_indices(const RunSlab& slab, const std::vector<int64_t>& global) {
  std::vector<int64_t> out;
  const size_t ndim = global.size();
  std::vector<int64_t> at(ndim, 0);
  int64_t numel = 1;
  for (int64_t c : slab.count) numel *= c;
  for (int64_t i = 0; i < numel; ++i) {
    int64_t flat = 0;
    for (size_t a = 0; a < ndim; ++a) flat = flat * global[a] + slab.start[a] + at[a];
    out.push_back(flat);
    for (int a = static_cast<int>(ndim) - 1; a >= 0; --a) {
      if (++at[a] < slab.count[a]) break;
      at[a] = 0;
    }
  }
  return out;
}

TEST(ElementRuns, EveryRunOfEveryBoxIsCoveredInOrder) {
  const std::vector<int64_t> global = {5, 6, 7};
  const std::vector<std::vector<int64_t>> shapes = {{7}, {3, 4}, {2, 3, 4}, {1, 5, 1}};
  for (const std::vector<int64_t>& shape : shapes) {
    const size_t ndim = shape.size();
    const std::vector<int64_t> g(global.end() - ndim, global.end());
    std::vector<int64_t> offset(ndim, 1);
    offset[0] = g[0] - shape[0];  // a box off the origin
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    // The global index of each box element, in the box's row-major order.
    const std::vector<int64_t> box =
        slab_indices(RunSlab{offset, shape, 0}, g);
    for (int64_t begin = 0; begin <= numel; ++begin) {
      for (int64_t n = 0; begin + n <= numel; ++n) {
        const std::vector<RunSlab> slabs = run_slabs(offset, shape, begin, n);
        EXPECT_LE(slabs.size(), 2 * ndim);
        std::vector<int64_t> got;
        int64_t expected_offset = 0;
        for (const RunSlab& slab : slabs) {
          EXPECT_EQ(slab.data_offset, expected_offset);
          const std::vector<int64_t> part = slab_indices(slab, g);
          got.insert(got.end(), part.begin(), part.end());
          expected_offset += static_cast<int64_t>(part.size());
        }
        const std::vector<int64_t> want(box.begin() + begin, box.begin() + begin + n);
        ASSERT_EQ(got, want) << "shape rank " << ndim << " run [" << begin << ", " << begin + n
                             << ")";
      }
    }
  }
}

}  // namespace
}  // namespace moefold
