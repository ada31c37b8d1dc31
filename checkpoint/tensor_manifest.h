// TensorManifest: which tensors exist on ANY rank and which rank writes which slice of each.
//
// Collective HDF5 I/O needs every rank to make the same dataset calls, but ranks hold different
// tensors (pipeline stages) and different or identical slices (TP/EP shards, DP replicas). So
// before a save or load every rank shares its layouts; each distinct slice of a tensor is then
// written by exactly one of the ranks holding it, chosen to spread the bytes evenly (so DP
// replicas share the writing) and identically on every rank.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/parameter.h"
#include "parallel/communicator.h"

namespace moefold {

struct ManifestSlice {
  int writer = 0;               // world rank that writes this box (one of `holders`)
  std::vector<int> holders;     // world ranks holding this box, ascending
  std::vector<int64_t> offset;  // first global index, per axis
  std::vector<int64_t> shape;   // extent, per axis
};

struct ManifestEntry {
  std::string name;  // MODEL.md checkpoint name
  std::vector<int64_t> global_shape;
  std::vector<ManifestSlice> slices;  // distinct boxes, in order of their first holders' ranks
};

struct TensorManifest {
  std::vector<ManifestEntry> entries;  // every rank's tensors, sorted by name

  // The slice `rank` writes of `entry`, or nullptr.
  static const ManifestSlice* written_by(const ManifestEntry& entry, int rank);
};

// Gathers `local` (this rank's layouts) from every rank of `world`. Checks (internal invariants)
// that ranks agree on each tensor's global shape. Collective over `world`.
TensorManifest gather_manifest(const std::vector<const TensorLayout*>& local, Communicator& world);

// Checks that the distinct slices of every tensor tile it exactly (no gap, no overlap), which is
// what a save needs to write each element once.
void check_manifest_tiles(const TensorManifest& manifest);

}  // namespace moefold
