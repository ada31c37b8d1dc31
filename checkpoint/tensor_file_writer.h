// TensorFileWriter: the writes of a checkpoint file that moefold makes itself. Rank 0 writes the
// layout that HDF5 built in memory (Hdf5File::create_in_memory: every dataset contiguous, float32
// little-endian, allocated, its byte offset known); then each rank writes its slabs with plain
// pwrite at those offsets and syncs them. No library writes and no collective runs while data
// moves, so a write error (EIO, a full disk, a quota) is this rank's own errno, returned as a
// Status that the save agrees on across ranks before its next collective step. No rank is ever
// left alone inside a collective write.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/element_runs.h"

namespace moefold {

class TensorFileWriter {
 public:
  // Creates (truncating) `path`.
  static absl::StatusOr<TensorFileWriter> create(const std::string& path);
  // Opens the existing file `path` for writing (no truncation).
  static absl::StatusOr<TensorFileWriter> open(const std::string& path);

  // Writes the file's first `bytes` (its HDF5 layout) and sets its length to `size`.
  absl::Status write_layout(const std::vector<char>& bytes, int64_t size);

  TensorFileWriter(TensorFileWriter&& other) noexcept;
  TensorFileWriter& operator=(TensorFileWriter&&) = delete;
  TensorFileWriter(const TensorFileWriter&) = delete;
  TensorFileWriter& operator=(const TensorFileWriter&) = delete;
  ~TensorFileWriter();  // closes without reporting; call finish() to see errors

  // Writes `slabs` (element_runs.h) of the dataset `tensor` of `global_shape`, whose elements
  // start at byte `dataset_offset` of the file, from `data` (their elements contiguous in slab
  // order).
  absl::Status write_slabs(const std::string& tensor, int64_t dataset_offset,
                           const std::vector<int64_t>& global_shape,
                           const std::vector<RunSlab>& slabs, const float* data);
  // fdatasync, then close: a write-back error (EIO) surfaces here, on the rank that wrote.
  absl::Status finish();

 private:
  TensorFileWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

}  // namespace moefold
