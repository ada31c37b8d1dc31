// Saving and loading checkpoints (DESIGN.md "Checkpoints", MODEL.md "Checkpoint layout"):
// model.h5 and optim.h5 hold every tensor once at its GLOBAL shape: rank 0 lays each file out
// (HDF5 builds it in memory, moefold writes it), then every rank writes its distinct slices
// straight into it (tensor_file_writer.h); loads read collectively with parallel HDF5. meta.json
// holds the training position, the recipe and the layout that wrote it. Because tensors are
// stored unsharded, a checkpoint written under one layout loads under any other: each rank reads
// the boxes its own TensorLayouts name.
//
// Both calls are collective over ctx.world (a load reads through MPI-IO over its communicator;
// with the single-process context the files are plain serial HDF5). No other traffic may be in
// flight on ctx.world during them. The save directory must be visible to every rank (a shared
// file system when ranks span machines).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_config.h"
#include "model/parameter.h"
#include "optim/adamw.h"
#include "optim/optimizer_state.h"
#include "parallel/context.h"

namespace moefold {

// The training position a checkpoint restores, besides the tensors and the optimizer's step.
struct CheckpointState {
  int64_t iteration = 0;         // optimizer steps taken; also the LR schedule's position
  int64_t consumed_samples = 0;  // training samples consumed; the data iterator's position
  std::string recipe_text;       // the recipe that wrote it (YAML), kept verbatim in meta.json
};

// How a save treats the save directory.
struct CheckpointSaveOptions {
  int keep_last = 0;  // checkpoints kept once this one is committed (the oldest go); 0 = all
};

// A plain AdamW's moments as whole-tensor runs (`world_rank`: this rank).
OptimizerCheckpointState whole_optimizer_state(const AdamW& optimizer, int world_rank);

// What a save or load did, for the log line.
struct CheckpointIoStats {
  std::string dir;     // the iteration directory written or read
  int64_t bytes = 0;   // model.h5 + optim.h5 + meta.json
  double seconds = 0;  // wall time of the whole call, commit included
};

// "saved checkpoint ckpt/iter_0000010: 12.3 MB in 0.41 s (30.0 MB/s)" (`verb` = saved/loaded).
std::string describe_checkpoint_io(const char* verb, const CheckpointIoStats& stats);

// Writes <save_dir>/iter_<7-digit state.iteration>/ atomically (checkpoint_dir.h), points
// <save_dir>/latest at it, then prunes to options.keep_last checkpoints. `registry`
// gives every parameter and buffer with its layout; `optimizer` (may be null: no optim.h5) holds
// the Adam moments of the registry's parameters, by name. `model` is stored as attributes of
// model.h5's root. Does not modify any tensor. Every rank gets the same status. Every
// collective HDF5 call is agreed on before the next, so a write error on any rank (disk full,
// quota, EIO) fails the save on every rank with one line naming the rank, the file and the
// error; the partial save is removed and the previous checkpoint is untouched. meta.json records
// a layout-independent checksum of every tensor (tensor_checksum.h).
//
// Crash-safety test hook: with MOEFOLD_TEST_ABORT_SAVE_AFTER=n in the environment, the process
// aborts right after writing its n-th tensor (counting model then optimizer tensors).
absl::StatusOr<CheckpointIoStats> save_checkpoint(const std::string& save_dir,
                                                  const CheckpointState& state,
                                                  const ParameterRegistry& registry,
                                                  const AdamW* optimizer,
                                                  const ParallelContext& ctx,
                                                  const ModelConfig& model,
                                                  const CheckpointSaveOptions& options = {});
// The same with the optimizer state as runs (the distributed optimizer's shards): each rank
// writes only its runs, as hyperslabs of the global tensors.
absl::StatusOr<CheckpointIoStats> save_checkpoint(const std::string& save_dir,
                                                  const CheckpointState& state,
                                                  const ParameterRegistry& registry,
                                                  const OptimizerCheckpointState& optimizer,
                                                  const ParallelContext& ctx,
                                                  const ModelConfig& model,
                                                  const CheckpointSaveOptions& options = {});

// Loads the checkpoint at `path` (a save directory, through its `latest`, or an iteration
// directory) into the registry's parameters and buffers and, when `optimizer` is not null, its
// moments and step count. Values are written in place into the tensors' shared storage.
// Everything is validated first (files present and readable, model config equal to `expected`
// in every key that decides the tensors or the model's function, every tensor present with its
// global shape); on any such error nothing is modified and every rank gets the same one-line
// error naming the file and tensor or key. After reading, every tensor's checksum is verified
// against meta.json (checkpoints without checksums are accepted): a corrupt tensor is one error
// line naming the file and tensor, the values read must then not be used. `stats` (optional)
// receives the time and bytes.
absl::StatusOr<CheckpointState> load_checkpoint(const std::string& path,
                                                const ParameterRegistry& registry, AdamW* optimizer,
                                                const ParallelContext& ctx,
                                                const ModelConfig& expected,
                                                CheckpointIoStats* stats = nullptr);
// The same filling the optimizer's runs in place (each rank reads only its own elements) and
// optimizer.steps.
absl::StatusOr<CheckpointState> load_checkpoint(const std::string& path,
                                                const ParameterRegistry& registry,
                                                OptimizerCheckpointState& optimizer,
                                                const ParallelContext& ctx,
                                                const ModelConfig& expected,
                                                CheckpointIoStats* stats = nullptr);

}  // namespace moefold
