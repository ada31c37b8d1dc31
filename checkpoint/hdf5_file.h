// Hdf5File: a thin RAII wrapper over the HDF5 C API for checkpoints. Datasets are float32 at a
// tensor's GLOBAL shape; each rank writes or reads one box (its local slice) of it.
//
// With an MPI communicator the file is opened through MPI-IO (parallel HDF5) and every dataset
// create, write and read is collective: every rank of the communicator must make the same calls
// in the same order, and a rank with nothing to transfer passes no box (an empty selection).
// With MPI_COMM_NULL the file is an ordinary serial HDF5 file and MPI is not needed.
//
// Every HDF5 failure is returned as one absl::Status line naming the file and the dataset or
// attribute, followed by HDF5's own innermost reason (e.g. "truncated file: eof = ...").
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint/element_runs.h"

namespace moefold {

// One rank's part of a dataset: the box [offset, offset + shape) of the global tensor, held
// contiguously (row-major, `shape`) at `data`.
struct HyperslabF32 {
  std::vector<int64_t> offset;
  std::vector<int64_t> shape;
  float* data = nullptr;
};

// A root attribute: integers, floats, strings and integer lists are all a checkpoint needs.
using Hdf5Attribute = std::variant<int64_t, double, std::string, std::vector<int64_t>>;

// A whole file's bytes as HDF5 laid it out in memory (Hdf5File::create_in_memory).
struct Hdf5FileImage {
  std::vector<char> bytes;  // the file's first bytes: its metadata (and possibly some holes)
  int64_t size = 0;         // the file's length; past `bytes`, the datasets' elements
};

struct CoreImage;  // the in-memory file behind create_in_memory (hdf5_file.cpp)

class Hdf5File {
 public:
  // Creates (truncating) `path` for writing. Collective over `comm` unless it is MPI_COMM_NULL.
  static absl::StatusOr<Hdf5File> create(const std::string& path, MPI_Comm comm);
  // Lays out a file in memory (HDF5's core driver: nothing touches the disk), for close_to_image.
  // `metadata_bytes` is room reserved for every object header ahead of the datasets' elements,
  // so that the image holds the metadata alone. `path` names the file in messages.
  static absl::StatusOr<Hdf5File> create_in_memory(const std::string& path,
                                                    int64_t metadata_bytes);
  // Opens an existing file read-only. HDF5 rejects truncated files and corrupt metadata here.
  static absl::StatusOr<Hdf5File> open(const std::string& path, MPI_Comm comm);

  Hdf5File(Hdf5File&& other) noexcept;
  Hdf5File& operator=(Hdf5File&& other) noexcept;
  Hdf5File(const Hdf5File&) = delete;
  Hdf5File& operator=(const Hdf5File&) = delete;
  ~Hdf5File();  // closes without reporting; call close() to see errors

  // Flushes and closes (collective); the object is unusable afterwards.
  absl::Status close();
  // For a file from create_in_memory: closes it and returns its bytes, which the caller writes
  // to disk itself (and so sees every write error as its own errno).
  absl::StatusOr<Hdf5FileImage> close_to_image();
  const std::string& path() const { return path_; }

  // Creates a float32 dataset of `global_shape` at `name` ("layers/1/moe/router"), creating the
  // intermediate groups. Collective.
  absl::Status create_dataset(const std::string& name, const std::vector<int64_t>& global_shape);
  // The byte offset in the file of dataset `name`'s elements (contiguous, allocated), for
  // writers that bypass HDF5 (tensor_file_writer.h); 0 for a dataset with no elements.
  absl::StatusOr<int64_t> dataset_offset(const std::string& name) const;
  // Writes this rank's box of dataset `name`, or nothing when `slice` is null. Collective.
  absl::Status write(const std::string& name, const HyperslabF32* slice);
  // Reads this rank's box of dataset `name` into slice->data, or nothing when `slice` is null.
  // Collective.
  absl::Status read(const std::string& name, const HyperslabF32* slice);
  // Writes / reads the union of `slabs` (element_runs.h) of dataset `name` from / into `data`,
  // which holds their elements contiguously in slab order; no slabs: nothing. Collective.
  absl::Status write_slabs(const std::string& name, const std::vector<RunSlab>& slabs,
                           const float* data);
  absl::Status read_slabs(const std::string& name, const std::vector<RunSlab>& slabs,
                          float* data);

  // The dataset's shape; NotFound when `name` is not a dataset, InvalidArgument when it is not
  // float32.
  absl::StatusOr<std::vector<int64_t>> dataset_shape(const std::string& name) const;
  // Every dataset's path (no leading '/'), depth-first in name order.
  absl::StatusOr<std::vector<std::string>> list_datasets() const;

  // Root attributes. Writing is collective (every rank passes the same value).
  absl::Status write_attribute(const std::string& name, const Hdf5Attribute& value);
  // NotFound when absent.
  absl::StatusOr<Hdf5Attribute> read_attribute(const std::string& name) const;
  absl::StatusOr<std::vector<std::string>> list_attributes() const;

 private:
  Hdf5File(std::string path, hid_t file, bool parallel, std::unique_ptr<CoreImage> image = nullptr);
  absl::Status transfer(const std::string& name, const std::vector<RunSlab>& slabs, float* data,
                        bool write);

  std::string path_;
  hid_t file_ = H5I_INVALID_HID;
  bool parallel_ = false;
  std::unique_ptr<CoreImage> image_;  // create_in_memory's memory; null for a file on disk
};

// A readable form of an attribute value: 42, 0.5, "softmax", [0, 1, 1].
std::string format_attribute(const Hdf5Attribute& value);

}  // namespace moefold
