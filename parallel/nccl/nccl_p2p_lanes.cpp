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
void NcclP2pLanes::connect(const Lane& lane, bool sending) {
  const cudaStream_t stream = lane.stream->get();
  void* word = nullptr;
  MOEFOLD_NCCL_CUDA_CHECK(cudaMallocAsync(&word, sizeof(float), stream));
  MOEFOLD_NCCL_CUDA_CHECK(cudaMemsetAsync(word, 0, sizeof(float), stream));
  if (sending) {
    MOEFOLD_NCCL_CHECK(ncclSend(word, 1, ncclFloat32, 1, lane.comm, stream));
  } else {
    MOEFOLD_NCCL_CHECK(ncclRecv(word, 1, ncclFloat32, 0, lane.comm, stream));
  }
  MOEFOLD_NCCL_CUDA_CHECK(cudaFreeAsync(word, stream));
  MOEFOLD_NCCL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

absl::StatusOr<std::unique_ptr<NcclP2pLanes>> NcclP2pLanes::create(MpiCommunicator& mpi,
                                                                   cudaStream_t compute) {
  std::unique_ptr<NcclP2pLanes> lanes(new NcclP2pLanes(mpi.rank(), mpi.size()));
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
    Lane lane;
    const ncclResult_t result = ncclCommInitRank(&lane.comm, 2, id, sending ? 0 : 1);
    if (result != ncclSuccess) {
      int device = -1;
      cudaGetDevice(&device);
      return absl::InternalError(absl::StrFormat(
          "ncclCommInitRank for the point-to-point lane %d→%d (lane %d) of %s failed on rank %d "
          "(cuda:%d): %s",
          plan.sender, plan.receiver, plan.lane, mpi.label() ? *mpi.label() : "a group", mpi.rank(),
          device, ncclGetErrorString(result)));
    }
    lane.stream = std::make_unique<nccl_support::NcclStream>(
        lane.comm, compute,
        absl::StrFormat("the point-to-point lane %d→%d (lane %d) of %s", plan.sender, plan.receiver,
                        plan.lane, mpi.label() ? *mpi.label() : "a group"));
    connect(lane, sending);
    lanes->lanes_[Key{sending, peer, plan.lane}] = std::move(lane);
  }
  return lanes;
}

NcclP2pLanes::~NcclP2pLanes() {
  for (auto& [key, lane] : lanes_) {
    lane.stream.reset();  // after every message of the lane completed
    ncclCommDestroy(lane.comm);
  }
}

bool NcclP2pLanes::serves(int peer) const { return ring_neighbours(rank_, peer, size_); }

template <class Call>
WorkHandle NcclP2pLanes::issue(bool sending, int peer, int tag,
                               const std::shared_ptr<const std::string>& label, Call call) {
  MOEFOLD_CHECK(tag >= 0, "point-to-point tag " << tag << " is negative");
  const auto it = lanes_.find(Key{sending, peer, p2p_lane(tag)});
  MOEFOLD_CHECK(it != lanes_.end(), "rank " << rank_ << " has no point-to-point lane "
                                            << (sending ? "to" : "from") << " rank " << peer);
  const Lane& lane = it->second;
  return lane.stream->run(
      [&] { MOEFOLD_NCCL_CHECK(call(lane.comm, lane.stream->get())); },
      [&] { return std::make_shared<WorkState>(sending ? "send" : "recv", label); });
}

// In a lane's two-rank communicator the sender is rank 0, the receiver rank 1.
WorkHandle NcclP2pLanes::send(const void* data, int64_t count, CommDType dtype, int peer, int tag,
                              const std::shared_ptr<const std::string>& label) {
  return issue(true, peer, tag, label, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclSend(data, count, nccl_support::nccl_type(dtype), 1, comm, stream);
  });
}

WorkHandle NcclP2pLanes::recv(void* data, int64_t count, CommDType dtype, int peer, int tag,
                              const std::shared_ptr<const std::string>& label) {
  return issue(false, peer, tag, label, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclRecv(data, count, nccl_support::nccl_type(dtype), 0, comm, stream);
  });
}

}  // namespace moefold
