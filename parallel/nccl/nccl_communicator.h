// NcclCommunicator: the Communicator over NCCL for buffers in GPU memory (built only with CUDA
// and NCCL). One ncclComm_t per rank group, created from an ncclUniqueId that the group's rank 0
// broadcasts over MPI. Every operation is issued on the communicator's own stream after a CUDA
// event recorded on the CUDA backend's compute stream (so it reads what compute wrote), and its
// handle completes when an event recorded after it has fired. all_to_all_v and the *_v forms
// are grouped send/recv, broadcast and reduce calls.
//
// Point-to-point messages between ring neighbours (pipeline stages, the context-parallel ring)
// travel in NCCL lanes of their own (nccl_p2p_lanes.h) when the group asks for them.
//
// Host buffers (counts, losses, metadata that callers keep on the host) cannot go through NCCL;
// those operations, and barrier, go through the group's MPI communicator, which every rank of
// the group uses for the same call since the buffers' placement is the same on every rank.
// So do messages to other peers, and every message of a group without lanes.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl/nccl_p2p_lanes.h"
#include "parallel/nccl/nccl_support.h"

namespace moefold {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `mpi`'s group; needs the CUDA backend registered (the rank's GPU chosen).
  // `point_to_point`: the group's messages between ring neighbours go over NCCL lanes.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> create(
      std::shared_ptr<MpiCommunicator> mpi, bool point_to_point = false);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  using Communicator::all_reduce_async;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  MPI_Comm mpi_comm() const override { return mpi_->mpi_comm(); }

  WorkHandle all_reduce_async(void* data, int64_t count, CommDType dtype,
                              ReduceOp op) override;
  WorkHandle all_gather_async(const void* send, int64_t count, void* recv,
                              CommDType dtype) override;
  WorkHandle all_gather_v_async(const void* send, int64_t send_count, void* recv,
                                std::span<const int64_t> recv_counts, CommDType dtype) override;
  WorkHandle reduce_scatter_async(const void* send, void* recv, int64_t recv_count,
                                  CommDType dtype, ReduceOp op) override;
  WorkHandle reduce_scatter_v_async(const void* send, void* recv,
                                    std::span<const int64_t> recv_counts, CommDType dtype,
                                    ReduceOp op) override;
  WorkHandle all_to_all_async(const void* send, void* recv, int64_t count,
                              CommDType dtype) override;
  WorkHandle all_to_all_v_async(const void* send, std::span<const int64_t> send_counts,
                                void* recv, std::span<const int64_t> recv_counts,
                                CommDType dtype) override;
  WorkHandle broadcast_async(void* data, int64_t count, CommDType dtype, int root) override;
  WorkHandle send_async(const void* data, int64_t count, CommDType dtype, int peer,
                        int tag = 0) override;
  WorkHandle recv_async(void* data, int64_t count, CommDType dtype, int peer,
                        int tag = 0) override;
  WorkHandle barrier_async() override;

 private:
  NcclCommunicator(std::shared_ptr<MpiCommunicator> mpi, ncclComm_t comm,
                   cudaStream_t compute);
  // True when every non-null buffer lives on the GPU (else the MPI path is taken).
  static bool on_device(std::initializer_list<const void*> buffers);
  // Runs `issue` (NCCL calls on stream_) after compute, and returns a handle completed once
  // they are done.
  template <class Issue>
  WorkHandle run(const char* what, Issue issue);

  std::shared_ptr<MpiCommunicator> mpi_;
  ncclComm_t comm_;
  std::unique_ptr<nccl_support::NcclStream> stream_;
  std::unique_ptr<NcclP2pLanes> lanes_;  // null: messages take the MPI path
};

}  // namespace moefold
