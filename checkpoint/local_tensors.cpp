#include "checkpoint/local_tensors.h"

#include <algorithm>
#include <cstring>

#include "checkpoint/element_runs.h"
#include "checkpoint/tensor_checksum.h"
#include "tensor/backend.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

// The tensor's memory, on its device (HostStagedRuns brings device runs to the host).
float* checked_data(const Tensor& t, const TensorLayout& layout) {
  MOEFOLD_CHECK(t.dtype() == DType::kFloat32, layout.name << ": checkpoints hold float32");
  MOEFOLD_CHECK(t.shape() == layout.local_shape,
                layout.name << ": tensor " << t.shape_string() << " vs its layout");
  return t.data();  // a Tensor is a handle: writes through it land in the shared storage
}

LocalTensor whole(const TensorLayout& layout, float* data, int world_rank) {
  return {&layout, {{0, layout.local_numel(), data}}, {world_rank}};
}

bool contains(const std::vector<int>& ranks, int rank) {
  return std::find(ranks.begin(), ranks.end(), rank) != ranks.end();
}

// Whether this rank writes its runs: the manifest's writer of the box it holds is one of the
// ranks that split that box with it (itself, for whole tensors).
bool writes_runs(const ManifestEntry& entry, const LocalTensor& tensor, int world_rank) {
  for (const ManifestSlice& slice : entry.slices) {
    if (contains(slice.holders, world_rank)) return contains(tensor.shard_group, slice.writer);
  }
  return false;
}

// The slabs of all runs of `tensor`, their elements contiguous in `*data`: the run's own memory
// when there is one run, else `scratch` (filled from the runs when `fill`).
std::vector<RunSlab> slabs_of(const LocalTensor& tensor, std::vector<float>* scratch, bool fill,
                              float** data) {
  std::vector<RunSlab> slabs;
  int64_t offset = 0;
  for (const LocalRun& run : tensor.runs) {
    for (RunSlab& slab : run_slabs(tensor.layout->local_offset, tensor.layout->local_shape,
                                   run.begin, run.numel)) {
      slab.data_offset += offset;
      slabs.push_back(std::move(slab));
    }
    offset += run.numel;
  }
  if (tensor.runs.size() == 1) {
    *data = tensor.runs[0].data;
    return slabs;
  }
  scratch->assign(static_cast<size_t>(offset), 0.0f);
  if (fill) {
    int64_t at = 0;
    for (const LocalRun& run : tensor.runs) {
      std::memcpy(scratch->data() + at, run.data, static_cast<size_t>(run.numel) * sizeof(float));
      at += run.numel;
    }
  }
  *data = scratch->data();
  return slabs;
}

uint64_t slabs_checksum(const std::vector<int64_t>& global_shape,
                        const std::vector<RunSlab>& slabs, const float* data) {
  uint64_t sum = 0;
  for (const RunSlab& slab : slabs) {
    sum += box_checksum(global_shape, slab.start, slab.count, data + slab.data_offset);
  }
  return sum;
}

}  // namespace

void HostStagedRuns::stage(LocalTensors& tensors, bool fill) {
  for (auto& [name, tensor] : tensors) {
    for (LocalRun& run : tensor.runs) {
      if (run.numel == 0 || device_of_pointer(run.data) == Device::kCpu) continue;
      Staged& s = staged_.emplace_back(Staged{run.data, std::vector<float>(run.numel)});
      if (fill) ops::copy_memory(s.host.data(), s.device, s.host.size() * sizeof(float));
      run.data = s.host.data();
    }
  }
}

void HostStagedRuns::write_back() const {
  for (const Staged& s : staged_) {
    ops::copy_memory(s.device, s.host.data(), s.host.size() * sizeof(float));
  }
}

LocalTensors model_tensors(const ParameterRegistry& registry, int world_rank) {
  LocalTensors out;
  for (const auto& p : registry.parameters()) {
    out[p->name()] = whole(p->layout, checked_data(p->value, p->layout), world_rank);
  }
  for (const auto& b : registry.buffers()) {
    out[b->name()] = whole(b->layout, checked_data(b->value, b->layout), world_rank);
  }
  return out;
}

LocalTensors optimizer_tensors(const ParameterRegistry& registry,
                               const OptimizerCheckpointState& state, bool second_moment) {
  LocalTensors out;
  for (const OptimizerStateTensor& t : state.tensors) {
    const Parameter* p = registry.find(t.name);
    MOEFOLD_CHECK(p != nullptr, "optimizer tensor " << t.name << " is not in the registry");
    LocalTensor local{&p->layout, {}, t.shard_group};
    for (const OptimizerStateRun& run : t.runs) {
      MOEFOLD_CHECK(run.begin >= 0 && run.numel >= 0 &&
                        run.begin + run.numel <= p->layout.local_numel(),
                    t.name << ": optimizer run [" << run.begin << ", " << run.begin + run.numel
                           << ") of " << p->layout.local_numel() << " elements");
      local.runs.push_back({run.begin, run.numel, second_moment ? run.exp_avg_sq : run.exp_avg});
    }
    out[t.name] = std::move(local);
  }
  return out;
}

std::vector<const TensorLayout*> layouts_of(const LocalTensors& tensors) {
  std::vector<const TensorLayout*> out;
  for (const auto& [name, t] : tensors) out.push_back(t.layout);
  return out;
}

absl::Status write_local(TensorFileWriter& file, const std::string& dataset,
                         int64_t dataset_offset, const ManifestEntry& entry,
                         const LocalTensor* tensor, int world_rank, uint64_t* checksum,
                         bool* wrote) {
  *checksum = 0;
  *wrote = false;
  std::vector<RunSlab> slabs;
  std::vector<float> scratch;
  float* data = nullptr;
  if (tensor != nullptr && writes_runs(entry, *tensor, world_rank)) {
    slabs = slabs_of(*tensor, &scratch, /*fill=*/true, &data);
    *checksum = slabs_checksum(entry.global_shape, slabs, data);
    *wrote = !slabs.empty();
  }
  return file.write_slabs(dataset, dataset_offset, entry.global_shape, slabs, data);
}

absl::Status read_local(Hdf5File& file, const std::string& dataset, const LocalTensor* tensor) {
  if (tensor == nullptr) return file.read_slabs(dataset, {}, nullptr);
  std::vector<float> scratch;
  float* data = nullptr;
  const std::vector<RunSlab> slabs = slabs_of(*tensor, &scratch, /*fill=*/false, &data);
  if (absl::Status s = file.read_slabs(dataset, slabs, data); !s.ok()) return s;
  if (tensor->runs.size() > 1) {
    int64_t at = 0;
    for (const LocalRun& run : tensor->runs) {
      std::memcpy(run.data, scratch.data() + at, static_cast<size_t>(run.numel) * sizeof(float));
      at += run.numel;
    }
  }
  return absl::OkStatus();
}

uint64_t local_checksum(const ManifestEntry& entry, const LocalTensor& tensor, int world_rank) {
  if (!writes_runs(entry, tensor, world_rank)) return 0;
  std::vector<float> scratch;
  float* data = nullptr;
  const std::vector<RunSlab> slabs = slabs_of(tensor, &scratch, /*fill=*/true, &data);
  return slabs_checksum(entry.global_shape, slabs, data);
}

}  // namespace moefold
