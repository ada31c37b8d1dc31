#include "parallel/nccl/nccl_p2p_lanes.h"

#include <string>

#include "absl/strings/str_format.h"
#include "parallel/p2p_lanes.h"
#include "tensor/check.h"

namespace moefold {
namespace {

constexpr int kUniqueIdTag = 7;  // the group's MPI messages carrying a lane's ncclUniqueId

}  // namespace

// NCCL connects two ranks for point-to-point on their first message, inside the ncclSend or
// ncclRecv call, which returns only once the peer has made its own first call. A ring whose
// ranks each post a receive before their send would wait there in a cycle, so every lane
// carries one element while both of its ranks are at it, in the creation order.
void NcclP2pLanes::connect(Lane& lane, bool sending) {
  void* word = nullptr;
  MOEFOLD_NCCL_CUDA_CHECK(cudaMallocAsync(&word, sizeof(float), lane.stream));
  MOEFOLD_NCCL_CUDA_CHECK(cudaMemsetAsync(word, 0, sizeof(float), lane.stream));
  if (sending) {
    MOEFOLD_NCCL_CHECK(ncclSend(word, 1, ncclFloat32, 1, lane.comm, lane.stream));
  } else {
    MOEFOLD_NCCL_CHECK(ncclRecv(word, 1, ncclFloat32, 0, lane.comm, lane.stream));
  }
  MOEFOLD_NCCL_CUDA_CHECK(cudaFreeAsync(word, lane.stream));
  MOEFOLD_NCCL_CUDA_CHECK(cudaStreamSynchronize(lane.stream));
}

NcclP2pLanes::NcclP2pLanes(int rank, int size, cudaStream_t compute)
    : rank_(rank), size_(size), compute_(compute) {}

absl::StatusOr<std::unique_ptr<NcclP2pLanes>> NcclP2pLanes::create(MpiCommunicator& mpi,
                                                                   cudaStream_t compute) {
  std::unique_ptr<NcclP2pLanes> lanes(new NcclP2pLanes(mpi.rank(), mpi.size(), compute));
  int device = 0;
  MOEFOLD_NCCL_CUDA_CHECK(cudaGetDevice(&device));
  for (const P2pLane& plan : ring_p2p_lanes(mpi.rank(), mpi.size())) {
    const bool sending = plan.sender == mpi.rank();
    const int peer = sending ? plan.receiver : plan.sender;
    // The sender makes the lane's id; in the two-rank communicator it is rank 0.
    ncclUniqueId id;
    if (sending) {
      MOEFOLD_NCCL_CHECK(ncclGetUniqueId(&id));
      mpi.send(&id, sizeof(id), CommDType::kUInt8, peer, kUniqueIdTag);
    } else {
      mpi.recv(&id, sizeof(id), CommDType::kUInt8, peer, kUniqueIdTag);
    }
    auto lane = std::make_unique<Lane>();
    const ncclResult_t result = ncclCommInitRank(&lane->comm, 2, id, sending ? 0 : 1);
    if (result != ncclSuccess) {
      return absl::InternalError(absl::StrFormat(
          "ncclCommInitRank for the point-to-point lane %d→%d (lane %d) of %s failed on rank %d "
          "(cuda:%d): %s",
          plan.sender, plan.receiver, plan.lane, mpi.label() ? *mpi.label() : "a group", mpi.rank(),
          device, ncclGetErrorString(result)));
    }
    MOEFOLD_NCCL_CUDA_CHECK(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking));
    connect(*lane, sending);
    lane->completions = std::make_unique<nccl_support::StreamCompletions>(lane->comm, device);
    lanes->lanes_[Key{sending, peer, plan.lane}] = std::move(lane);
  }
  return lanes;
}

NcclP2pLanes::~NcclP2pLanes() {
  for (auto& [key, lane] : lanes_) {
    lane->completions.reset();  // after every message of the lane completed
    ncclCommDestroy(lane->comm);
    cudaStreamDestroy(lane->stream);
  }
}

bool NcclP2pLanes::serves(int peer) const { return ring_neighbours(rank_, peer, size_); }

NcclP2pLanes::Lane& NcclP2pLanes::lane(bool sending, int peer, int tag) {
  MOEFOLD_CHECK(tag >= 0, "point-to-point tag " << tag << " is negative");
  const auto it = lanes_.find(Key{sending, peer, p2p_lane(tag)});
  MOEFOLD_CHECK(it != lanes_.end(), "rank " << rank_ << " has no point-to-point lane "
                                            << (sending ? "to" : "from") << " rank " << peer);
  return *it->second;
}

WorkHandle NcclP2pLanes::send(const void* data, int64_t count, CommDType dtype, int peer, int tag,
                              const std::shared_ptr<const std::string>& label) {
  Lane& l = lane(true, peer, tag);
  std::lock_guard<std::mutex> issuing(l.issue_mutex);
  nccl_support::order_after(l.stream, compute_);  // the data is written
  MOEFOLD_NCCL_CHECK(ncclSend(data, count, nccl_support::nccl_type(dtype), 1, l.comm, l.stream));
  return l.completions->track(l.stream, std::make_shared<WorkState>("send", label));
}

WorkHandle NcclP2pLanes::recv(void* data, int64_t count, CommDType dtype, int peer, int tag,
                              const std::shared_ptr<const std::string>& label) {
  Lane& l = lane(false, peer, tag);
  std::lock_guard<std::mutex> issuing(l.issue_mutex);
  nccl_support::order_after(l.stream, compute_);  // compute is done with the buffer
  MOEFOLD_NCCL_CHECK(ncclRecv(data, count, nccl_support::nccl_type(dtype), 0, l.comm, l.stream));
  return l.completions->track(l.stream, std::make_shared<WorkState>("recv", label));
}

}  // namespace moefold
