#include "parallel/context.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/layout.h"
#include "parallel/mpi_communicator.h"
#ifdef MOEFOLD_HAVE_NCCL
#include "parallel/nccl/nccl_communicator.h"
#endif
#include "parallel/self_communicator.h"
#include "parallel/watchdog.h"
#include "tensor/check.h"

namespace moefold {

std::shared_ptr<Communicator>& ParallelContext::group(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp: return tp;
    case GroupKind::kCp: return cp;
    case GroupKind::kDp: return dp;
    case GroupKind::kPp: return pp;
    case GroupKind::kDpCp: return dp_cp;
    case GroupKind::kTpCp: return tp_cp;
    case GroupKind::kTpCpDp: return tp_cp_dp;
    case GroupKind::kTpPp: return tp_pp;
    case GroupKind::kEp: return ep;
    case GroupKind::kEtp: return etp;
    case GroupKind::kEdp: return edp;
    case GroupKind::kEtpEp: return etp_ep;
    case GroupKind::kEtpEpPp: return etp_ep_pp;
    case GroupKind::kEmbedding: return embedding;
  }
  MOEFOLD_CHECK(false, "unknown group kind " << static_cast<int>(kind));
}

const std::shared_ptr<Communicator>& ParallelContext::group(GroupKind kind) const {
  return const_cast<ParallelContext*>(this)->group(kind);
}

ParallelContext ParallelContext::single_process() {
  ParallelContext context;
  context.config.expert_tensor_parallel_size = 1;
  context.world = std::make_shared<SelfCommunicator>();
  for (GroupKind kind : all_group_kinds()) context.group(kind) = std::make_shared<SelfCommunicator>();
  return context;
}

namespace {

// The group's communicator in the library the recipe chose (auto was resolved at launch; left
// unresolved it means MPI). Collective over the group. `point_to_point`: the group's messages
// between ring neighbours (pipeline stages, the context-parallel ring) go over NCCL too.
absl::StatusOr<std::shared_ptr<Communicator>> over_chosen_library(
    CommunicatorBackend library, std::shared_ptr<MpiCommunicator> mpi,
    bool point_to_point = false) {
  if (library != CommunicatorBackend::kNccl) return std::shared_ptr<Communicator>(std::move(mpi));
#ifdef MOEFOLD_HAVE_NCCL
  auto nccl = NcclCommunicator::create(std::move(mpi), point_to_point);
  if (!nccl.ok()) return nccl.status();
  return std::shared_ptr<Communicator>(std::move(*nccl));
#else
  return absl::FailedPreconditionError(
      "parallel.communicator: nccl, but this moefold was built without NCCL");
#endif
}

}  // namespace

absl::StatusOr<ParallelContext> ParallelContext::create(const ParallelConfig& config,
                                                        MPI_Comm world) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return absl::FailedPreconditionError("MPI is not initialised (use MpiRuntime)");
  }
  int world_size = 0;
  MPI_Comm_size(world, &world_size);
  // Every rank validates the same inputs, so every rank returns the same error before any
  // communicator exists.
  absl::StatusOr<RankLayout> layout = build_rank_layout(config, world_size);
  if (!layout.ok()) return layout.status();
  std::shared_ptr<MpiCommunicator> world_comm = MpiCommunicator::duplicate(world);

  ParallelContext context;
  context.config = config;
  context.config.expert_tensor_parallel_size = config.expert_tensor_parallel();
  const int rank = world_comm->rank();
  context.coords = layout->coordinates[rank];
  world_comm->set_label(absl::StrCat("world (", world_size, " ranks)"));
  // The watchdog's arrival slots: the world's, then one per group kind (a rank is in one group
  // of each kind, so the slot is the same on every rank of a group).
  static_assert(kNumGroupKinds + 1 <= watchdog::kArrivalSlots);
  std::vector<int> all_ranks(world_size);
  std::iota(all_ranks.begin(), all_ranks.end(), 0);
  watchdog::register_group(*world_comm->label(), 0, std::move(all_ranks));
  auto world_chosen = over_chosen_library(config.communicator, world_comm);
  if (!world_chosen.ok()) return world_chosen.status();
  context.world = std::move(*world_chosen);
  const std::shared_ptr<MpiProgressEngine>& engine = world_comm->engine();
  for (GroupKind kind : all_group_kinds()) {
    // Color: which group of this kind; key: the position in it, which becomes the MPI rank.
    const int index = layout->group_index[rank][static_cast<int>(kind)];
    int color = MPI_UNDEFINED, key = 0;
    if (index >= 0) {
      const RankGroup& group = layout->groups_of(kind)[index];
      color = index;
      key = static_cast<int>(std::find(group.begin(), group.end(), rank) - group.begin());
    }
    MPI_Comm comm = MPI_COMM_NULL;
    int rc;
    {
      std::unique_lock<std::mutex> lock = engine->lock_mpi();
      rc = MPI_Comm_split(world_comm->comm(), color, key, &comm);
    }
    if (rc != MPI_SUCCESS) {
      return absl::InternalError(absl::StrCat("MPI_Comm_split for the ", group_kind_name(kind),
                                              " groups failed: ", mpi_error_string(rc)));
    }
    if (comm == MPI_COMM_NULL) continue;
    auto communicator = std::make_shared<MpiCommunicator>(comm, engine);
    MOEFOLD_CHECK(communicator->rank() == key &&
                      communicator->size() ==
                          static_cast<int>(layout->groups_of(kind)[index].size()),
                  group_kind_name(kind) << " communicator of rank " << rank);
    communicator->set_label(absl::StrCat(group_kind_name(kind), " [",
                                         absl::StrJoin(layout->groups_of(kind)[index], ","), "]"));
    watchdog::register_group(*communicator->label(), static_cast<int>(kind) + 1,
                             layout->groups_of(kind)[index]);
    auto chosen = over_chosen_library(config.communicator, std::move(communicator),
                                      kind == GroupKind::kPp || kind == GroupKind::kCp);
    if (!chosen.ok()) return chosen.status();
    context.group(kind) = std::move(*chosen);
  }
  return context;
}

}  // namespace moefold
