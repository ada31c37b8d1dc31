#include "checkpoint/element_runs.h"

#include "tensor/check.h"

namespace moefold {
namespace {

// Slabs of the flat range [begin, end) of the sub-box from `axis` on, whose earlier axes are
// fixed at `prefix` (global coordinates). `data_offset` is where `begin` sits in the run.
void decompose(const std::vector<int64_t>& box_offset, const std::vector<int64_t>& box_shape,
               size_t axis, std::vector<int64_t>& prefix, int64_t begin, int64_t end,
               int64_t data_offset, std::vector<RunSlab>* out) {
  if (begin >= end) return;
  const size_t ndim = box_shape.size();
  int64_t inner = 1;  // elements per index of `axis`
  for (size_t a = axis + 1; a < ndim; ++a) inner *= box_shape[a];
  int64_t first = begin / inner, last = (end - 1) / inner;  // indices along `axis`
  const auto slab = [&](int64_t from, int64_t to, int64_t offset) {  // indices [from, to], full
    RunSlab s;
    s.start = prefix;
    s.start.push_back(box_offset[axis] + from);
    s.count.assign(axis, 1);
    s.count.push_back(to - from + 1);
    for (size_t a = axis + 1; a < ndim; ++a) {
      s.start.push_back(box_offset[a]);
      s.count.push_back(box_shape[a]);
    }
    s.data_offset = offset;
    out->push_back(std::move(s));
  };
  const auto partial = [&](int64_t index, int64_t from, int64_t to, int64_t offset) {
    prefix.push_back(box_offset[axis] + index);
    decompose(box_offset, box_shape, axis + 1, prefix, from, to, offset, out);
    prefix.pop_back();
  };
  if (first == last && (begin % inner != 0 || end % inner != 0 || end - begin < inner)) {
    partial(first, begin - first * inner, end - first * inner, data_offset);
    return;
  }
  int64_t offset = data_offset;
  if (begin % inner != 0) {  // the head: the rest of index `first`
    partial(first, begin % inner, inner, offset);
    offset += inner - begin % inner;
    ++first;
  }
  const bool tail = end % inner != 0;
  const int64_t full_last = tail ? last - 1 : last;
  if (first <= full_last) {
    slab(first, full_last, offset);
    offset += (full_last - first + 1) * inner;
  }
  if (tail) partial(last, 0, end % inner, offset);
}

}  // namespace

std::vector<RunSlab> run_slabs(const std::vector<int64_t>& box_offset,
                               const std::vector<int64_t>& box_shape, int64_t begin,
                               int64_t numel) {
  MOEFOLD_CHECK(box_offset.size() == box_shape.size());
  int64_t box_numel = 1;
  for (int64_t d : box_shape) box_numel *= d;
  MOEFOLD_CHECK(begin >= 0 && numel >= 0 && begin + numel <= box_numel,
                "run [" << begin << ", " << begin + numel << ") of a box of " << box_numel);
  std::vector<RunSlab> out;
  if (numel == 0) return out;
  if (box_shape.empty()) {  // a scalar
    out.push_back({{}, {}, 0});
    return out;
  }
  std::vector<int64_t> prefix;
  decompose(box_offset, box_shape, 0, prefix, begin, begin + numel, 0, &out);
  return out;
}

}  // namespace moefold
