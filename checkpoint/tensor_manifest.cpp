#include "checkpoint/tensor_manifest.h"

#include <algorithm>
#include <map>

#include "tensor/check.h"

namespace moefold {
namespace {

// A rank's layouts flattened to int64 for one all_gather_v: per tensor the name's length and
// characters, the rank, then global shape, local offset and local shape.
std::vector<int64_t> encode(const std::vector<const TensorLayout*>& local) {
  std::vector<int64_t> out;
  out.push_back(static_cast<int64_t>(local.size()));
  for (const TensorLayout* layout : local) {
    out.push_back(static_cast<int64_t>(layout->name.size()));
    for (char c : layout->name) out.push_back(static_cast<unsigned char>(c));
    out.push_back(static_cast<int64_t>(layout->global_shape.size()));
    for (const auto* axes : {&layout->global_shape, &layout->local_offset, &layout->local_shape}) {
      MOEFOLD_CHECK(axes->size() == layout->global_shape.size(), layout->name);
      out.insert(out.end(), axes->begin(), axes->end());
    }
  }
  return out;
}

int64_t box_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool boxes_overlap(const ManifestSlice& a, const ManifestSlice& b) {
  for (size_t axis = 0; axis < a.shape.size(); ++axis) {
    if (a.offset[axis] >= b.offset[axis] + b.shape[axis] ||
        b.offset[axis] >= a.offset[axis] + a.shape[axis]) {
      return false;
    }
  }
  return true;
}

}  // namespace

const ManifestSlice* TensorManifest::written_by(const ManifestEntry& entry, int rank) {
  for (const ManifestSlice& slice : entry.slices) {
    if (slice.writer == rank) return &slice;
  }
  return nullptr;
}

TensorManifest gather_manifest(const std::vector<const TensorLayout*>& local, Communicator& world) {
  const std::vector<int64_t> mine = encode(local);
  const std::vector<int64_t> counts = world.all_gather_counts(static_cast<int64_t>(mine.size()));
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<int64_t> all(total);
  world.all_gather_v(mine.data(), static_cast<int64_t>(mine.size()), all.data(), counts,
                     CommDType::kInt64);

  std::map<std::string, ManifestEntry> by_name;
  size_t at = 0;
  for (int rank = 0; rank < world.size(); ++rank) {  // rank order: the first holder writes
    const int64_t tensors = all[at++];
    for (int64_t t = 0; t < tensors; ++t) {
      std::string name(static_cast<size_t>(all[at++]), ' ');
      for (char& c : name) c = static_cast<char>(all[at++]);
      const int64_t ndim = all[at++];
      const auto take = [&] {
        std::vector<int64_t> v(all.begin() + at, all.begin() + at + ndim);
        at += ndim;
        return v;
      };
      std::vector<int64_t> global = take();
      ManifestSlice slice{rank, {rank}, take(), take()};
      ManifestEntry& entry = by_name[name];
      if (entry.name.empty()) {
        entry.name = name;
        entry.global_shape = global;
      }
      MOEFOLD_CHECK(entry.global_shape == global,
                    name << ": ranks disagree on the global shape (rank " << rank << ")");
      const auto same = std::find_if(entry.slices.begin(), entry.slices.end(), [&](const auto& s) {
        return s.offset == slice.offset && s.shape == slice.shape;
      });
      if (same != entry.slices.end()) {
        same->holders.push_back(rank);
      } else {
        entry.slices.push_back(std::move(slice));
      }
    }
  }
  // Each slice goes to the holder with the fewest elements to write so far (ties: the lowest
  // rank), in name order: the same greedy choice on every rank.
  std::vector<int64_t> assigned(world.size(), 0);
  TensorManifest manifest;
  for (auto& [name, entry] : by_name) {
    for (ManifestSlice& slice : entry.slices) {
      slice.writer = *std::min_element(slice.holders.begin(), slice.holders.end(),
                                       [&](int a, int b) { return assigned[a] < assigned[b]; });
      assigned[slice.writer] += box_numel(slice.shape);
    }
    manifest.entries.push_back(std::move(entry));
  }
  return manifest;
}

void check_manifest_tiles(const TensorManifest& manifest) {
  for (const ManifestEntry& entry : manifest.entries) {
    int64_t covered = 0;
    for (size_t i = 0; i < entry.slices.size(); ++i) {
      covered += box_numel(entry.slices[i].shape);
      for (size_t j = 0; j < i; ++j) {
        MOEFOLD_CHECK(!boxes_overlap(entry.slices[i], entry.slices[j]),
                      entry.name << ": the slices of ranks " << entry.slices[j].writer << " and "
                                 << entry.slices[i].writer << " overlap");
      }
    }
    MOEFOLD_CHECK(covered == box_numel(entry.global_shape),
                  entry.name << ": the ranks' slices cover " << covered << " of "
                             << box_numel(entry.global_shape) << " elements");
  }
}

}  // namespace moefold
