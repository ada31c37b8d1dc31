// ArrivalBoard: the shared memory in which the ranks of each node publish their watchdog arrival
// records (watchdog.h: a heartbeat, and the collectives entered per group). It is an MPI
// shared-memory window of the node (MPI_Win_allocate_shared): the watchdogs read the other
// ranks' records with plain loads, so a stopped rank's record is read without its help and no
// MPI call is needed when a wait has already hung. Ranks on other nodes are not visible; the
// ranks of their own node name them.
#pragma once

#include <mpi.h>

#include <memory>

#include "absl/status/statusor.h"

namespace moefold {

class ArrivalBoard {
 public:
  // Collective over `world`; attaches the records to the watchdog.
  static absl::StatusOr<std::unique_ptr<ArrivalBoard>> create(MPI_Comm world);
  ~ArrivalBoard();  // detaches the watchdog, then frees the window (collective)
  ArrivalBoard(const ArrivalBoard&) = delete;
  ArrivalBoard& operator=(const ArrivalBoard&) = delete;

 private:
  ArrivalBoard(MPI_Comm node, MPI_Win window) : node_(node), window_(window) {}
  MPI_Comm node_;
  MPI_Win window_;
};

}  // namespace moefold
