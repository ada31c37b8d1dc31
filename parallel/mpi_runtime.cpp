#include "parallel/mpi_runtime.h"

#include <mpi.h>

#include "absl/strings/str_cat.h"

namespace moefold {

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::initialize(int* argc, char*** argv) {
  std::unique_ptr<MpiRuntime> runtime(new MpiRuntime());
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Query_thread(&runtime->thread_level_);
  } else {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &runtime->thread_level_) !=
        MPI_SUCCESS) {
      return absl::InternalError("MPI_Init_thread failed");
    }
    runtime->owns_mpi_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &runtime->world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &runtime->world_size_);
  if (runtime->thread_level_ < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this MPI offers thread level ", runtime->thread_level_,
        "; moefold's communication thread needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE"));
  }
  return runtime;
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

}  // namespace moefold
