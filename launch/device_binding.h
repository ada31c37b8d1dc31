// Binds each rank to its GPU when the recipe trains on cuda (DESIGN.md: device = local rank).
#pragma once

#include <mpi.h>

#include "absl/status/status.h"
#include "parallel/parallel_config.h"
#include "trainer/train_config.h"

namespace moefold {

// The rank's index among the ranks of its node and their number (MPI_Comm_split_type shared).
struct LocalRank {
  int rank = 0, size = 1;
};
LocalRank local_rank(MPI_Comm world);

// With training.device: cuda, registers the CUDA backend on GPU local_rank (modulo the node's
// GPUs when training.share_devices allows sharing). Errors name the rank, host and device: no
// CUDA build, no GPU, or more ranks on a node than GPUs without sharing. Collective over world:
// every rank returns the same status (the first failing rank's error). Also resolves
// parallel.communicator: auto becomes nccl when each rank has a GPU of its own and this build
// has NCCL, else mpi; an explicit nccl that cannot work is an error.
absl::Status bind_device(const TrainingConfig& training, ParallelConfig* parallel,
                         MPI_Comm world);

}  // namespace moefold
