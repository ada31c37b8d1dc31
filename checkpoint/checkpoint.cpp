#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_meta.h"
#include "checkpoint/config_attributes.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/local_tensors.h"
#include "checkpoint/tensor_checksum.h"
#include "checkpoint/tensor_file_writer.h"
#include "checkpoint/tensor_manifest.h"
#include "parallel/agreed_status.h"
#include "tensor/check.h"
#include "tensor/wall_clock.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

constexpr const char* kExpAvg = "exp_avg/";
constexpr const char* kExpAvgSq = "exp_avg_sq/";

// Loads read through MPI-IO over the world communicator, or serial HDF5 for one process.
MPI_Comm io_comm(const ParallelContext& ctx) { return ctx.world->mpi_comm(); }

// Every rank returns the status of the lowest failing rank, or OK when none failed, so that all
// ranks take the same path out of a collective call. Collective.
absl::Status agree(const absl::Status& local, Communicator& world) {
  if (world.size() == 1) return mark_agreed(local);
  int64_t mark = local.ok() ? -1 : world.size() - 1 - world.rank();
  world.all_reduce(std::span<int64_t>(&mark, 1), ReduceOp::kMax);
  if (mark < 0) return absl::OkStatus();
  const int root = world.size() - 1 - static_cast<int>(mark);
  std::string message(local.message());
  int64_t header[2] = {static_cast<int64_t>(local.code()), static_cast<int64_t>(message.size())};
  world.broadcast(std::span<int64_t>(header, 2), root);
  message.resize(static_cast<size_t>(header[1]));
  world.broadcast(message.data(), header[1], CommDType::kUInt8, root);
  return mark_agreed(absl::Status(static_cast<absl::StatusCode>(header[0]), message));
}

// MOEFOLD_TEST_ABORT_SAVE_AFTER=n: abort after this process's n-th tensor write (crash tests).
class AbortHook {
 public:
  AbortHook() {
    const char* env = std::getenv("MOEFOLD_TEST_ABORT_SAVE_AFTER");
    if (env == nullptr || !absl::SimpleAtoi(env, &limit_)) limit_ = -1;
  }
  void tensor_written() {
    if (limit_ >= 0 && ++written_ >= limit_) std::abort();
  }

 private:
  int64_t limit_ = -1;
  int64_t written_ = 0;
};

// Prefixes a failure with the rank it happened on: after agree() every rank reports the lowest
// failing rank's status, so the line must say whose it was.
absl::Status on_rank(const absl::Status& status, int rank) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("rank ", rank, ": ", status.message()));
}

// One step's outcome, agreed on by every rank before any rank takes the next collective step: a
// write error on one rank (disk full, quota, EIO) ends the save on every rank at the same point.
absl::Status agreed(const absl::Status& local, Communicator& world) {
  return agree(on_rank(local, world.rank()), world);
}

// The partial checksum of the runs this rank writes of each entry (0 where it writes none). At
// load the same runs are among those this rank has just read, so the same call verifies.
std::vector<uint64_t> partial_checksums(const TensorManifest& manifest, const LocalTensors& local,
                                        int rank) {
  std::vector<uint64_t> partial(manifest.entries.size(), 0);
  for (size_t i = 0; i < manifest.entries.size(); ++i) {
    const auto it = local.find(manifest.entries[i].name);
    if (it != local.end()) partial[i] = local_checksum(manifest.entries[i], it->second, rank);
  }
  return partial;
}

// Every tensor's checksum: the partial sums of all ranks added up (mod 2^64). Collective.
FileChecksums sum_checksums(const TensorManifest& manifest, const std::string& prefix,
                            const std::vector<uint64_t>& partial, Communicator& world) {
  const int64_t n = static_cast<int64_t>(partial.size());
  std::vector<uint64_t> all(static_cast<size_t>(n * world.size()));
  world.all_gather(partial.data(), n, all.data(), CommDType::kInt64);
  FileChecksums out;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t sum = 0;
    for (int r = 0; r < world.size(); ++r) sum += all[static_cast<size_t>(r * n + i)];
    out[prefix + manifest.entries[static_cast<size_t>(i)].name] = sum;
  }
  return out;
}

// Compares the checksums of what was read with those meta.json recorded (none recorded: a
// checkpoint from before checksums, accepted).
absl::Status verify_checksums(const std::string& path, const FileChecksums& computed,
                              const Checksums& recorded) {
  const auto file = recorded.find(fs::path(path).filename().string());
  if (file == recorded.end()) return absl::OkStatus();
  for (const auto& [name, value] : computed) {
    const auto want = file->second.find(name);
    if (want == file->second.end()) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' has no checksum in ",
                                              kMetaFile));
    }
    if (want->second != value) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", name, "' is corrupt: its bytes hash to ", format_checksum(value),
          ", ", kMetaFile, " recorded ", format_checksum(want->second)));
    }
  }
  return absl::OkStatus();
}

// Checks that every tensor of `manifest` is in `file` under `prefix` at its global shape.
absl::Status check_tensors(const Hdf5File& file, const std::string& prefix,
                           const TensorManifest& manifest) {
  for (const ManifestEntry& entry : manifest.entries) {
    auto shape = file.dataset_shape(prefix + entry.name);
    if (!shape.ok()) return shape.status();
    if (*shape != entry.global_shape) {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", prefix, entry.name,
                                                     "' has shape [", absl::StrJoin(*shape, ", "),
                                                     "] in the checkpoint, the model expects [",
                                                     absl::StrJoin(entry.global_shape, ", "), "]"));
    }
  }
  return absl::OkStatus();
}

// Reads this rank's runs of every tensor it holds; ranks without one take part with none.
absl::Status read_tensors(Hdf5File& file, const std::string& prefix, const TensorManifest& manifest,
                          const LocalTensors& local) {
  for (const ManifestEntry& entry : manifest.entries) {
    const auto it = local.find(entry.name);
    if (absl::Status s =
            read_local(file, prefix + entry.name, it != local.end() ? &it->second : nullptr);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

absl::Status check_iteration_attribute(const Hdf5File& file, int64_t iteration) {
  auto stored = file.read_attribute("iteration");
  if (!stored.ok()) return stored.status();
  const int64_t* value = std::get_if<int64_t>(&*stored);
  if (value == nullptr || *value != iteration) {
    return absl::DataLossError(absl::StrCat(file.path(), ": iteration attribute ",
                                            format_attribute(*stored), " does not match ",
                                            kMetaFile, "'s ", iteration));
  }
  return absl::OkStatus();
}

// The tensors of one checkpoint file under one name prefix ("" or "exp_avg/").
struct TensorGroup {
  std::string prefix;
  const TensorManifest* manifest;
  const LocalTensors* local;
};

// Rank 0 alone lays out `path`: HDF5 builds the file in memory (its attributes, and every dataset
// of `groups` contiguous, allocated and unwritten), then moefold writes that layout to disk
// itself, having reserved the file's space first (a full disk, a quota or a size limit fails
// there). HDF5 never writes to the disk during a save, so every write error is moefold's own
// errno. Returns each dataset's byte offset, in group then manifest order.
absl::StatusOr<std::vector<int64_t>> lay_out_file(const std::string& path,
                                                  const std::vector<ConfigAttribute>& attributes,
                                                  const std::vector<TensorGroup>& groups) {
  int64_t metadata = 64 << 10;  // the superblock and root group, then ~2 KiB for each dataset
  int64_t elements = 0;
  for (const TensorGroup& group : groups) {
    for (const ManifestEntry& entry : group.manifest->entries) {
      int64_t numel = 1;
      for (int64_t d : entry.global_shape) numel *= d;
      elements += numel;
      metadata += 2 << 10;
    }
  }
  auto file = Hdf5File::create_in_memory(path, metadata);
  if (!file.ok()) return file.status();
  for (const ConfigAttribute& a : attributes) {
    if (absl::Status s = file->write_attribute(a.name, a.value); !s.ok()) return s;
  }
  std::vector<int64_t> offsets;
  for (const TensorGroup& group : groups) {
    for (const ManifestEntry& entry : group.manifest->entries) {
      const std::string name = group.prefix + entry.name;
      if (absl::Status s = file->create_dataset(name, entry.global_shape); !s.ok()) return s;
      auto offset = file->dataset_offset(name);
      if (!offset.ok()) return offset.status();
      offsets.push_back(*offset);
    }
  }
  auto image = file->close_to_image();
  if (!image.ok()) return image.status();
  auto writer = TensorFileWriter::create(path);
  if (!writer.ok()) return writer.status();
  const int64_t reserve = std::max(image->size, metadata + elements * int64_t{sizeof(float)});
  if (absl::Status s = reserve_file_space(path, reserve); !s.ok()) return s;
  if (absl::Status s = writer->write_layout(image->bytes, image->size); !s.ok()) return s;
  if (absl::Status s = writer->finish(); !s.ok()) return s;
  return offsets;
}

// This rank's slices of every tensor of `groups`, written at `offsets` and synced, with their
// partial checksums per group. No other rank takes part, so an error here is this rank's alone.
absl::Status write_slices(const std::string& path, const std::vector<TensorGroup>& groups,
                          const std::vector<int64_t>& offsets, int rank, AbortHook& hook,
                          std::vector<std::vector<uint64_t>>* partial) {
  auto file = TensorFileWriter::open(path);
  if (!file.ok()) return file.status();
  size_t next = 0;
  for (const TensorGroup& group : groups) {
    const std::vector<ManifestEntry>& entries = group.manifest->entries;
    std::vector<uint64_t>& sums = partial->emplace_back(entries.size(), 0);
    for (size_t i = 0; i < entries.size(); ++i) {
      const auto it = group.local->find(entries[i].name);
      bool wrote = false;
      if (absl::Status s = write_local(*file, group.prefix + entries[i].name, offsets[next++],
                                       entries[i], it != group.local->end() ? &it->second : nullptr,
                                       rank, &sums[i], &wrote);
          !s.ok()) {
        return s;
      }
      if (wrote) hook.tensor_written();
    }
  }
  return file->finish();
}

// One checkpoint file: rank 0 lays it out, every rank writes its own slices, then the ranks agree
// on the outcome and add up the checksums. No library call writes to the disk and no collective
// runs while data is written: each error (EIO at a write or at the sync included) is one rank's
// errno until it is agreed.
absl::Status write_file(const std::string& path, const std::vector<ConfigAttribute>& attributes,
                        const std::vector<TensorGroup>& groups, Communicator& world,
                        AbortHook& hook, FileChecksums* checksums) {
  std::vector<int64_t> offsets;
  absl::Status status;
  if (world.rank() == 0) {
    auto laid_out = lay_out_file(path, attributes, groups);
    status = laid_out.status();
    if (laid_out.ok()) offsets = *std::move(laid_out);
  }
  if (status = agreed(status, world); !status.ok()) return status;
  size_t datasets = 0;
  for (const TensorGroup& group : groups) datasets += group.manifest->entries.size();
  offsets.resize(datasets);
  world.broadcast(std::span<int64_t>(offsets), 0);
  std::vector<std::vector<uint64_t>> partial;
  status = write_slices(path, groups, offsets, world.rank(), hook, &partial);
  if (status = agreed(status, world); !status.ok()) return status;
  for (size_t g = 0; g < groups.size(); ++g) {
    const FileChecksums sums =
        sum_checksums(*groups[g].manifest, groups[g].prefix, partial[g], world);
    checksums->insert(sums.begin(), sums.end());
  }
  return absl::OkStatus();
}

// model.h5 then optim.h5 (when `optimizer` is not null) in `staging`.
absl::Status write_tensor_files(const fs::path& staging, const CheckpointState& state,
                                const ModelConfig& model_config,
                                const TensorManifest& model_manifest, const LocalTensors& model,
                                const OptimizerCheckpointState* optimizer,
                                const TensorManifest& optim_manifest,
                                const LocalTensors& exp_avg, const LocalTensors& exp_avg_sq,
                                Communicator& world, Checksums* checksums) {
  AbortHook hook;
  std::vector<ConfigAttribute> attributes = model_config_attributes(model_config);
  attributes.push_back({"iteration", state.iteration});
  if (absl::Status s = write_file((staging / kModelFile).string(), attributes,
                                  {{"", &model_manifest, &model}}, world, hook,
                                  &(*checksums)[kModelFile]);
      !s.ok()) {
    return s;
  }
  if (optimizer == nullptr) return absl::OkStatus();
  return write_file((staging / kOptimFile).string(), {{"step", optimizer->steps}},
                    {{kExpAvg, &optim_manifest, &exp_avg},
                     {kExpAvgSq, &optim_manifest, &exp_avg_sq}},
                    world, hook, &(*checksums)[kOptimFile]);
}

absl::StatusOr<CheckpointIoStats> save(const std::string& save_dir, const CheckpointState& state,
                                       const ParameterRegistry& registry,
                                       const OptimizerCheckpointState* optimizer,
                                       const ParallelContext& ctx,
                                       const ModelConfig& model_config,
                                       const CheckpointSaveOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  Communicator& world = *ctx.world;
  const int rank = world.rank();
  if (save_dir.empty()) return absl::InvalidArgumentError("checkpoint.save: no directory given");
  if (state.iteration < 0) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: iteration ", state.iteration));
  }
  int64_t with_optimizer = optimizer != nullptr ? 1 : 0;
  world.all_reduce(std::span<int64_t>(&with_optimizer, 1), ReduceOp::kSum);
  MOEFOLD_CHECK(with_optimizer == 0 || with_optimizer == world.size(),
                "either every rank passes its optimizer to save_checkpoint or none does");

  HostStagedRuns staged;  // device tensors, copied to the host for HDF5
  LocalTensors model = model_tensors(registry, rank);
  staged.stage(model, /*fill=*/true);
  const TensorManifest model_manifest = gather_manifest(layouts_of(model), world);
  check_manifest_tiles(model_manifest);
  LocalTensors exp_avg, exp_avg_sq;
  TensorManifest optim_manifest;
  if (optimizer != nullptr) {
    exp_avg = optimizer_tensors(registry, *optimizer, /*second_moment=*/false);
    exp_avg_sq = optimizer_tensors(registry, *optimizer, /*second_moment=*/true);
    staged.stage(exp_avg, /*fill=*/true);
    staged.stage(exp_avg_sq, /*fill=*/true);
    optim_manifest = gather_manifest(layouts_of(exp_avg), world);
    check_manifest_tiles(optim_manifest);
  }

  absl::Status status;
  if (rank == 0) status = prepare_staging_dir(save_dir, state.iteration).status();
  if (status = agreed(status, world); !status.ok()) return status;
  const fs::path staging = fs::path(save_dir) / (iteration_dir_name(state.iteration) + ".tmp");
  Checksums checksums;
  status = write_tensor_files(staging, state, model_config, model_manifest, model, optimizer,
                              optim_manifest, exp_avg, exp_avg_sq, world, &checksums);
  if (!status.ok()) {
    // Every rank has left every collective; the partial save must not fill the disk.
    if (rank == 0) remove_staging_dir(staging.string());
    return status;
  }

  // Rank 0 alone finishes: meta.json, fsync, rename, `latest`, pruning.
  int64_t bytes = 0;
  const std::string final_dir = (fs::path(save_dir) / iteration_dir_name(state.iteration)).string();
  if (rank == 0) {
    const int64_t model_bytes = file_bytes((staging / kModelFile).string());
    const int64_t optim_bytes = optimizer ? file_bytes((staging / kOptimFile).string()) : 0;
    const std::string meta =
        meta_json(state, optimizer ? optimizer->steps : -1, ctx, model_bytes, optim_bytes,
                  checksums);
    bytes = model_bytes + optim_bytes + static_cast<int64_t>(meta.size());
    status = write_file_synced((staging / kMetaFile).string(), meta);
    if (status.ok()) status = commit_checkpoint(save_dir, state.iteration);
    if (!status.ok()) remove_staging_dir(staging.string());  // gone already once committed
    if (status.ok()) status = prune_checkpoints(save_dir, options.keep_last);
  }
  if (status = agreed(status, world); !status.ok()) return status;
  world.broadcast(std::span<int64_t>(&bytes, 1), 0);
  return CheckpointIoStats{final_dir, bytes, seconds_since(start)};
}

absl::StatusOr<CheckpointState> load(const std::string& path, const ParameterRegistry& registry,
                                     OptimizerCheckpointState* optimizer,
                                     const ParallelContext& ctx, const ModelConfig& expected,
                                     CheckpointIoStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  Communicator& world = *ctx.world;
  const MPI_Comm comm = io_comm(ctx);

  // Validation: nothing in memory changes until every check passed on every rank.
  auto dir = resolve_checkpoint_dir(path);
  if (absl::Status s = agree(dir.status(), world); !s.ok()) return s;
  const fs::path root(*dir);
  auto meta = read_meta((root / kMetaFile).string());
  if (absl::Status s = agree(meta.status(), world); !s.ok()) return s;
  const CheckpointState& state = meta->state;

  HostStagedRuns staged;  // device tensors are read into host buffers, copied once verified
  LocalTensors model = model_tensors(registry, world.rank());
  staged.stage(model, /*fill=*/false);
  const TensorManifest model_manifest = gather_manifest(layouts_of(model), world);
  auto model_file = Hdf5File::open((root / kModelFile).string(), comm);
  absl::Status status = model_file.status();
  if (status.ok()) status = check_model_config(*model_file, expected);
  if (status.ok()) status = check_iteration_attribute(*model_file, state.iteration);
  if (status.ok()) status = check_tensors(*model_file, "", model_manifest);
  if (status = agree(status, world); !status.ok()) return status;

  LocalTensors exp_avg, exp_avg_sq;
  TensorManifest optim_manifest;
  absl::StatusOr<Hdf5File> optim_file = absl::NotFoundError("no optimizer");
  int64_t steps = 0;
  if (optimizer != nullptr) {
    exp_avg = optimizer_tensors(registry, *optimizer, /*second_moment=*/false);
    exp_avg_sq = optimizer_tensors(registry, *optimizer, /*second_moment=*/true);
    staged.stage(exp_avg, /*fill=*/false);
    staged.stage(exp_avg_sq, /*fill=*/false);
    optim_manifest = gather_manifest(layouts_of(exp_avg), world);
    optim_file = Hdf5File::open((root / kOptimFile).string(), comm);
    status = optim_file.status();
    if (status.ok()) {
      auto step = optim_file->read_attribute("step");
      status = step.status();
      if (status.ok() && !std::holds_alternative<int64_t>(*step)) {
        status = absl::DataLossError(optim_file->path() + ": attribute 'step' is not an integer");
      }
      if (status.ok()) steps = std::get<int64_t>(*step);
    }
    if (status.ok()) status = check_tensors(*optim_file, kExpAvg, optim_manifest);
    if (status.ok()) status = check_tensors(*optim_file, kExpAvgSq, optim_manifest);
    if (status = agree(status, world); !status.ok()) return status;
  }

  // Reading: each rank fills its own slices.
  status = read_tensors(*model_file, "", model_manifest, model);
  if (status.ok()) status = model_file->close();
  if (optimizer != nullptr) {
    if (status.ok()) status = read_tensors(*optim_file, kExpAvg, optim_manifest, exp_avg);
    if (status.ok()) status = read_tensors(*optim_file, kExpAvgSq, optim_manifest, exp_avg_sq);
    if (status.ok()) status = optim_file->close();
  }
  if (status = agree(status, world); !status.ok()) return status;

  // Integrity, before anyone trains on the values: the checksums of what every rank read.
  const int rank = world.rank();
  status = verify_checksums(
      model_file->path(),
      sum_checksums(model_manifest, "", partial_checksums(model_manifest, model, rank), world),
      meta->checksums);
  if (optimizer != nullptr) {
    FileChecksums moments =
        sum_checksums(optim_manifest, kExpAvg, partial_checksums(optim_manifest, exp_avg, rank),
                      world);
    const FileChecksums second = sum_checksums(
        optim_manifest, kExpAvgSq, partial_checksums(optim_manifest, exp_avg_sq, rank), world);
    moments.insert(second.begin(), second.end());
    if (status.ok()) status = verify_checksums(optim_file->path(), moments, meta->checksums);
  }
  if (status = agree(status, world); !status.ok()) return status;
  staged.write_back();
  if (optimizer != nullptr) optimizer->steps = steps;

  if (stats != nullptr) {
    stats->dir = *dir;
    stats->bytes = file_bytes((root / kModelFile).string()) +
                   (optimizer ? file_bytes((root / kOptimFile).string()) : 0) +
                   file_bytes((root / kMetaFile).string());
    stats->seconds = seconds_since(start);
  }
  return state;
}

}  // namespace

std::string describe_checkpoint_io(const char* verb, const CheckpointIoStats& stats) {
  const double mb = static_cast<double>(stats.bytes) / 1e6;
  return absl::StrFormat("%s checkpoint %s: %.1f MB in %.2f s (%.1f MB/s)", verb, stats.dir, mb,
                         stats.seconds, stats.seconds > 0 ? mb / stats.seconds : 0.0);
}

OptimizerCheckpointState whole_optimizer_state(const AdamW& optimizer, int world_rank) {
  OptimizerCheckpointState state;
  state.steps = optimizer.steps();
  for (size_t i = 0; i < optimizer.tensors().size(); ++i) {
    const Tensor& m = optimizer.exp_avg(i);
    const Tensor& v = optimizer.exp_avg_sq(i);
    MOEFOLD_CHECK(m.dtype() == DType::kFloat32 && v.dtype() == DType::kFloat32 &&
                      m.device() == Device::kCpu && v.device() == Device::kCpu,
                  optimizer.tensors()[i].name);
    state.tensors.push_back(
        {optimizer.tensors()[i].name, {{0, m.numel(), m.data(), v.data()}}, {world_rank}});
  }
  return state;
}

absl::StatusOr<CheckpointIoStats> save_checkpoint(
    const std::string& save_dir, const CheckpointState& state, const ParameterRegistry& registry,
    const AdamW* optimizer, const ParallelContext& ctx, const ModelConfig& model,
    const CheckpointSaveOptions& options) {
  if (optimizer == nullptr) return save(save_dir, state, registry, nullptr, ctx, model, options);
  const OptimizerCheckpointState whole = whole_optimizer_state(*optimizer, ctx.world->rank());
  return save(save_dir, state, registry, &whole, ctx, model, options);
}

absl::StatusOr<CheckpointIoStats> save_checkpoint(
    const std::string& save_dir, const CheckpointState& state, const ParameterRegistry& registry,
    const OptimizerCheckpointState& optimizer, const ParallelContext& ctx, const ModelConfig& model,
    const CheckpointSaveOptions& options) {
  return save(save_dir, state, registry, &optimizer, ctx, model, options);
}

absl::StatusOr<CheckpointState> load_checkpoint(const std::string& path,
                                                const ParameterRegistry& registry, AdamW* optimizer,
                                                const ParallelContext& ctx,
                                                const ModelConfig& expected,
                                                CheckpointIoStats* stats) {
  if (optimizer == nullptr) return load(path, registry, nullptr, ctx, expected, stats);
  OptimizerCheckpointState whole = whole_optimizer_state(*optimizer, ctx.world->rank());
  auto state = load(path, registry, &whole, ctx, expected, stats);
  if (state.ok()) optimizer->set_steps(whole.steps);
  return state;
}

absl::StatusOr<CheckpointState> load_checkpoint(const std::string& path,
                                                const ParameterRegistry& registry,
                                                OptimizerCheckpointState& optimizer,
                                                const ParallelContext& ctx,
                                                const ModelConfig& expected,
                                                CheckpointIoStats* stats) {
  return load(path, registry, &optimizer, ctx, expected, stats);
}

}  // namespace moefold
