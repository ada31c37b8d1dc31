// This rank's part of the tensors of one checkpoint file, as runs of each tensor's local box
// (row-major): a model tensor is one run, the whole box; the distributed optimizer's moments are
// the segments this rank owns (element_runs.h). Each element of a global tensor is written once:
// by the ranks that split the box of the manifest's writer for it (tensor_manifest.h).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/tensor_file_writer.h"
#include "checkpoint/tensor_manifest.h"

namespace moefold {

struct LocalRun {
  int64_t begin = 0;  // first element of the local box covered
  int64_t numel = 0;
  float* data = nullptr;  // (numel)
};

struct LocalTensor {
  const TensorLayout* layout = nullptr;
  std::vector<LocalRun> runs;
  std::vector<int> shard_group;  // world ranks splitting this box between them; {rank}: whole
};
using LocalTensors = std::map<std::string, LocalTensor>;  // by checkpoint name

// Runs whose memory lives on a device (a GPU run's parameters and optimizer state) point at host
// copies while HDF5 reads or writes them: stage() swaps each such run's pointer for a host
// buffer, filled from the device when saving; write_back() copies the buffers to the devices once
// a load has been verified, so a corrupt checkpoint changes nothing.
class HostStagedRuns {
 public:
  void stage(LocalTensors& tensors, bool fill);
  void write_back() const;

 private:
  struct Staged {
    float* device;
    std::vector<float> host;
  };
  std::deque<Staged> staged_;  // a deque: the host buffers' addresses stay put
};

// Every parameter and buffer of the registry, whole.
LocalTensors model_tensors(const ParameterRegistry& registry, int world_rank);
// One moment of the optimizer state (exp_avg, or exp_avg_sq when `second_moment`), with the
// layouts of the registry's parameters of the same names.
LocalTensors optimizer_tensors(const ParameterRegistry& registry,
                               const OptimizerCheckpointState& state, bool second_moment);
std::vector<const TensorLayout*> layouts_of(const LocalTensors& tensors);

// Writes the runs of `tensor` this rank writes into `dataset`, whose elements start at byte
// `dataset_offset` of the file (nothing when it writes none or `tensor` is null), and sets
// `checksum` to their partial checksum (tensor_checksum.h) and `wrote` to whether it wrote any
// element. Local: no other rank takes part.
absl::Status write_local(TensorFileWriter& file, const std::string& dataset,
                         int64_t dataset_offset, const ManifestEntry& entry,
                         const LocalTensor* tensor, int world_rank, uint64_t* checksum,
                         bool* wrote);
// Reads every run of `tensor` from `dataset` (nothing when null). Collective.
absl::Status read_local(Hdf5File& file, const std::string& dataset, const LocalTensor* tensor);
// The partial checksum of the runs of `tensor` this rank writes (after a read: has read).
uint64_t local_checksum(const ManifestEntry& entry, const LocalTensor& tensor, int world_rank);

}  // namespace moefold
