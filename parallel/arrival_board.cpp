#include "parallel/arrival_board.h"

#include <new>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel/mpi_progress.h"
#include "parallel/watchdog.h"

namespace moefold {

absl::StatusOr<std::unique_ptr<ArrivalBoard>> ArrivalBoard::create(MPI_Comm world) {
  const std::shared_ptr<MpiProgressEngine> engine = MpiProgressEngine::shared();
  std::unique_lock<std::mutex> lock = engine->lock_mpi();
  int world_rank = 0;
  MPI_Comm_rank(world, &world_rank);
  MPI_Comm node = MPI_COMM_NULL;
  if (int rc = MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
      rc != MPI_SUCCESS) {
    return absl::InternalError("watchdog arrival board: MPI_Comm_split_type failed: " +
                               mpi_error_string(rc));
  }
  int node_rank = 0, node_size = 1;
  MPI_Comm_rank(node, &node_rank);
  MPI_Comm_size(node, &node_size);
  void* mine = nullptr;
  MPI_Win window = MPI_WIN_NULL;
  if (int rc = MPI_Win_allocate_shared(sizeof(watchdog::ArrivalRecord), 1, MPI_INFO_NULL, node,
                                       &mine, &window);
      rc != MPI_SUCCESS) {
    MPI_Comm_free(&node);
    return absl::InternalError("watchdog arrival board: MPI_Win_allocate_shared failed: " +
                               mpi_error_string(rc));
  }
  new (mine) watchdog::ArrivalRecord();
  std::vector<watchdog::ArrivalRecord*> records(static_cast<size_t>(node_size));
  for (int i = 0; i < node_size; ++i) {
    MPI_Aint bytes = 0;
    int unit = 0;
    void* base = nullptr;
    MPI_Win_shared_query(window, i, &bytes, &unit, &base);
    records[static_cast<size_t>(i)] = static_cast<watchdog::ArrivalRecord*>(base);
  }
  std::vector<int> world_ranks(static_cast<size_t>(node_size));
  // The node's world ranks; the gather also puts every record's construction before any read.
  MPI_Allgather(&world_rank, 1, MPI_INT, world_ranks.data(), 1, MPI_INT, node);
  watchdog::attach_arrivals(std::move(records), std::move(world_ranks), node_rank);
  return std::unique_ptr<ArrivalBoard>(new ArrivalBoard(node, window));
}

ArrivalBoard::~ArrivalBoard() {
  watchdog::detach_arrivals();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  std::unique_lock<std::mutex> lock = MpiProgressEngine::shared()->lock_mpi();
  MPI_Win_free(&window_);
  MPI_Comm_free(&node_);
}

}  // namespace moefold
