// MpiRuntime: MPI for the lifetime of one object. It initialises MPI with MPI_THREAD_MULTIPLE
// (the communication thread calls MPI while the caller computes) and finalises it when
// destroyed. Create one in main before any ParallelContext, destroy it after the last one.
#pragma once

#include <memory>

#include "absl/status/statusor.h"

namespace moefold {

class MpiRuntime {
 public:
  // Fails (with the level MPI offers) if MPI cannot give at least MPI_THREAD_SERIALIZED. If MPI
  // is already initialised, the runtime neither initialises nor finalises it.
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> initialize(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int thread_level() const { return thread_level_; }  // MPI_THREAD_* provided
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }

 private:
  MpiRuntime() = default;

  bool owns_mpi_ = false;
  int thread_level_ = 0;
  int world_rank_ = 0;
  int world_size_ = 1;
};

}  // namespace moefold
