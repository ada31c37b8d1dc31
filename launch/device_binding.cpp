#include "launch/device_binding.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_format.h"

#include "tensor/cuda_entry.h"

namespace moefold {

LocalRank local_rank(MPI_Comm world) {
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  LocalRank local;
  MPI_Comm_rank(node, &local.rank);
  MPI_Comm_size(node, &local.size);
  MPI_Comm_free(&node);
  return local;
}

namespace {

absl::Status bind_this_rank(const TrainingConfig& training, const LocalRank& local,
                            MPI_Comm world) {
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
#ifdef MOEFOLD_HAVE_CUDA
  const int gpus = cuda_device_count();
  if (gpus == 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "training.device: cuda, but rank %d (host %s) sees no GPU: %s", rank, host,
        cuda_unavailable_reason()));
  }
  // The ranks without a GPU of their own fail, so the error names one of them.
  if (local.rank >= gpus && !training.share_devices) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "training.device: cuda: host %s runs %d ranks but has %d GPU(s) (rank %d would need "
        "cuda:%d); start fewer ranks per node, or set training.share_devices: true",
        host, local.size, gpus, rank, local.rank));
  }
  const int device = local.rank % gpus;
  if (absl::Status s = register_cuda_device(device); !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("rank %d (host %s): %s", rank, host, s.message()));
  }
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError(absl::StrFormat(
      "training.device: cuda, but this moefold was built without CUDA (rank %d, host %s)", rank,
      host));
#endif
}

// The first failing rank's error, on every rank (so that rank 0 reports it and no rank waits).
absl::Status agree(const absl::Status& mine, MPI_Comm world) {
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  int first_failed = mine.ok() ? size : rank;
  MPI_Allreduce(MPI_IN_PLACE, &first_failed, 1, MPI_INT, MPI_MIN, world);
  if (first_failed == size) return absl::OkStatus();
  std::string message(mine.message());
  int length = static_cast<int>(message.size());
  MPI_Bcast(&length, 1, MPI_INT, first_failed, world);
  message.resize(length);
  MPI_Bcast(message.data(), length, MPI_CHAR, first_failed, world);
  return absl::FailedPreconditionError(message);
}

}  // namespace

absl::Status bind_device(const TrainingConfig& training, ParallelConfig* parallel,
                         MPI_Comm world) {
  const bool nccl_asked = parallel->communicator == CommunicatorBackend::kNccl;
  if (training.device != TrainingDevice::kCuda) {
    if (nccl_asked) {
      return absl::InvalidArgumentError(
          "parallel.communicator: nccl needs training.device: cuda (use mpi or auto on cpu)");
    }
    parallel->communicator = CommunicatorBackend::kMpi;
    return absl::OkStatus();
  }
  const LocalRank local = local_rank(world);
  absl::Status status = agree(bind_this_rank(training, local, world), world);
  if (!status.ok()) return status;
#if defined(MOEFOLD_HAVE_CUDA) && defined(MOEFOLD_HAVE_NCCL)
  // Every rank of a node sees the same GPU count, and NCCL needs a GPU per rank.
  int own_gpu = local.size <= cuda_device_count() ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &own_gpu, 1, MPI_INT, MPI_MIN, world);
  if (nccl_asked && own_gpu == 0) {
    return absl::InvalidArgumentError(
        "parallel.communicator: nccl needs one GPU per rank, but ranks share GPUs "
        "(training.share_devices); use parallel.communicator: mpi");
  }
  if (parallel->communicator == CommunicatorBackend::kAuto) {  // an explicit mpi stays mpi
    parallel->communicator = own_gpu ? CommunicatorBackend::kNccl : CommunicatorBackend::kMpi;
  }
#else
  if (nccl_asked) {
    return absl::InvalidArgumentError(
        "parallel.communicator: nccl, but this moefold was built without NCCL");
  }
  parallel->communicator = CommunicatorBackend::kMpi;
#endif
  return absl::OkStatus();
}

}  // namespace moefold
