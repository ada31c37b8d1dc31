// The on-disk layout of a save directory and its crash-safe commit (POSIX file system calls
// only; run on one rank):
//
//   <save>/iter_0000010/{model.h5, optim.h5, meta.json}   complete checkpoints
//   <save>/iter_0000012.tmp/                              a save in progress (or a crashed one)
//   <save>/latest                                         "12\n": the last complete iteration
//
// A save writes into iter_N.tmp/, fsyncs every file and the directory, renames it to iter_N,
// then replaces `latest` through latest.tmp + rename. A crash at any moment leaves `latest`
// naming a complete directory; *.tmp directories are never read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moefold {

inline constexpr const char* kModelFile = "model.h5";
inline constexpr const char* kOptimFile = "optim.h5";
inline constexpr const char* kMetaFile = "meta.json";
inline constexpr const char* kLatestFile = "latest";

// "<path>: <what>: Input/output error (EIO 5)" for the current errno.
absl::Status errno_error(const std::string& path, const char* what);

// "iter_0000010".
std::string iteration_dir_name(int64_t iteration);

// The iteration in <save_dir>/latest; errors name the file and what is wrong with it.
absl::StatusOr<int64_t> read_latest(const std::string& save_dir);

// The complete checkpoint directory `path` means: `path` itself when it holds meta.json (an
// iteration directory), else <path>/iter_N for the N in <path>/latest.
absl::StatusOr<std::string> resolve_checkpoint_dir(const std::string& path);

// Complete checkpoints (iter_N directories, not *.tmp) in `save_dir`, oldest first.
std::vector<int64_t> list_checkpoints(const std::string& save_dir);

// Creates an empty <save_dir>/iter_N.tmp/ (removing what a crashed save left there) and returns
// its path.
absl::StatusOr<std::string> prepare_staging_dir(const std::string& save_dir, int64_t iteration);

// Removes a failed save's iter_N.tmp/ so that it does not keep the disk full; best effort (the
// next save of that iteration removes it too).
void remove_staging_dir(const std::string& staging);

// Allocates `bytes` of disk space for the file at `path` (Linux fallocate), so that a full disk,
// a quota or a file size limit fails here, on the rank laying the file out, before any tensor
// data is written.
// A file system without fallocate is not an error: the space is then not reserved.
absl::Status reserve_file_space(const std::string& path, int64_t bytes);

// Writes `text` to `path` and fsyncs it.
absl::Status write_file_synced(const std::string& path, const std::string& text);

// fsyncs every file in iter_N.tmp/ and the directory, renames it to iter_N (replacing an older
// iter_N), then points `latest` at N.
absl::Status commit_checkpoint(const std::string& save_dir, int64_t iteration);

// Removes all but the newest `keep_last` complete checkpoints (0 = keep all). Never removes the
// one `latest` names.
absl::Status prune_checkpoints(const std::string& save_dir, int keep_last);

}  // namespace moefold
