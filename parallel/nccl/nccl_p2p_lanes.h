// Point-to-point over NCCL between the ring neighbours of a group: pipeline stages (r → r±1,
// the last stage wrapping to the first under interleaving) and the context-parallel ring.
//
// NCCL has no tags, and its sends and receives on one stream run in issue order, each holding
// the stream until its peer's matching call runs. Issued on one stream, a stage's receive of a
// gradient would hold back its send of an activation that the neighbour needs before it sends
// that gradient: a deadlock. So each lane, one per (sender, receiver, p2p_lane(tag))
// (communicator.h), is a two-rank NCCL communicator with a stream of its own; its messages meet
// in posting order, which the schedules keep (tests: lane matching). Lanes are connected when
// created, so no later message waits on the peer inside an NCCL call.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl/nccl_support.h"

namespace moefold {

class NcclP2pLanes {
 public:
  // Collective over `mpi`'s group (of two or more ranks): creates this rank's lanes to and from
  // its ring neighbours, in one order on every rank so that no creation waits on another.
  static absl::StatusOr<std::unique_ptr<NcclP2pLanes>> create(MpiCommunicator& mpi,
                                                              cudaStream_t compute);
  ~NcclP2pLanes();
  NcclP2pLanes(const NcclP2pLanes&) = delete;
  NcclP2pLanes& operator=(const NcclP2pLanes&) = delete;

  // Whether messages to and from `peer` (a rank of the group) travel in lanes: ring neighbours.
  bool serves(int peer) const;
  // As Communicator::send_async / recv_async, on device buffers, for a peer served.
  WorkHandle send(const void* data, int64_t count, CommDType dtype, int peer, int tag,
                  const std::shared_ptr<const std::string>& label);
  WorkHandle recv(void* data, int64_t count, CommDType dtype, int peer, int tag,
                  const std::shared_ptr<const std::string>& label);

 private:
  struct Lane {
    ncclComm_t comm = nullptr;
    std::unique_ptr<nccl_support::NcclStream> stream;
  };
  using Key = std::tuple<bool, int, int>;  // (this rank sends, peer, lane)

  NcclP2pLanes(int rank, int size) : rank_(rank), size_(size) {}
  static void connect(const Lane& lane, bool sending);  // one message, while both ranks are here
  // `call` (ncclSend or ncclRecv on a communicator and stream) on the lane to or from `peer`
  // that `tag` takes.
  template <class Call>
  WorkHandle issue(bool sending, int peer, int tag, const std::shared_ptr<const std::string>& label,
                   Call call);

  int rank_, size_;
  std::map<Key, Lane> lanes_;
};

}  // namespace moefold
