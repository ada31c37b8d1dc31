#include "launch/device_binding.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_format.h"

#ifdef MOEFOLD_HAVE_CUDA
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_device.h"
#endif

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

absl::Status bind_device(const TrainingConfig& training, MPI_Comm world) {
  if (training.device != TrainingDevice::kCuda) return absl::OkStatus();
  const LocalRank local = local_rank(world);  // collective: every rank calls it
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
#ifdef MOEFOLD_HAVE_CUDA
  const int gpus = cuda::device_count();
  if (gpus == 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "training.device: cuda, but rank %d (host %s) sees no GPU or no CUDA driver", rank, host));
  }
  if (local.size > gpus && !training.share_devices) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "training.device: cuda: host %s runs %d ranks but has %d GPU(s) (rank %d would need "
        "cuda:%d); start fewer ranks per node, or set training.share_devices: true",
        host, local.size, gpus, rank, local.rank));
  }
  const int device = local.rank % gpus;
  if (absl::Status s = cuda::register_cuda_backend(device); !s.ok()) {
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

}  // namespace moefold
