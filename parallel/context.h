// ParallelContext: this rank's coordinates and one communicator per rank group, passed explicitly
// to whatever needs them (no global parallel state). Copies share the communicators.
#pragma once

#include <mpi.h>

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/coordinates.h"
#include "parallel/layout.h"
#include "parallel/parallel_config.h"

namespace moefold {

struct ParallelContext {
  ParallelConfig config;  // as given, with expert_tensor_parallel_size resolved (never 0)
  RankCoordinates coords;

  // A communicator's rank order is the member order of its group in the layout (layout.h).
  // Attention side.
  std::shared_ptr<Communicator> world;
  std::shared_ptr<Communicator> tp;
  std::shared_ptr<Communicator> cp;
  std::shared_ptr<Communicator> dp;
  std::shared_ptr<Communicator> pp;
  std::shared_ptr<Communicator> dp_cp;     // dense gradient reduction
  std::shared_ptr<Communicator> tp_cp;     // router statistics (aux loss over all tokens)
  std::shared_ptr<Communicator> tp_cp_dp;  // expert-bias token counts
  std::shared_ptr<Communicator> tp_pp;     // model-parallel group (dense grad norm)
  // Expert side.
  std::shared_ptr<Communicator> ep;
  std::shared_ptr<Communicator> etp;
  std::shared_ptr<Communicator> edp;        // expert gradient reduction
  std::shared_ptr<Communicator> etp_ep;     // token dispatcher
  std::shared_ptr<Communicator> etp_ep_pp;  // expert model-parallel group (expert grad norm)
  // First and last pipeline stage (tied embeddings); null on middle stages. With PP=1 it holds
  // this rank alone.
  std::shared_ptr<Communicator> embedding;

  // The communicator of a group kind of the layout (layout.h).
  std::shared_ptr<Communicator>& group(GroupKind kind);
  const std::shared_ptr<Communicator>& group(GroupKind kind) const;

  bool is_first_pp_stage() const { return coords.pp_rank == 0; }
  bool is_last_pp_stage() const { return coords.pp_rank == coords.pp_size - 1; }

  // All sizes 1 with SelfCommunicators: single-process runs and unit tests, no MPI needed.
  static ParallelContext single_process();

  // Validates `config` against the size of `world`, builds the layout (layout.h) and splits one
  // communicator per group from a duplicate of `world`. Collective over `world`; MPI must be
  // initialised (mpi_runtime.h).
  static absl::StatusOr<ParallelContext> create(const ParallelConfig& config, MPI_Comm world);
};

}  // namespace moefold
