// MpiCommunicator: the Communicator over an MPI communicator. Every operation, blocking or not,
// is queued on the process-wide MpiProgressEngine thread, which issues it as non-blocking MPI
// and polls it to completion; the calling thread only waits on the handle.
#pragma once

#include <mpi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mpi_progress.h"

namespace moefold {

class HostStaging;  // mpi_communicator.cpp

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed once all its work is done); errors on it are returned, not
  // fatal, and reach the caller as an InternalError from wait().
  MpiCommunicator(MPI_Comm comm, std::shared_ptr<MpiProgressEngine> engine);
  // A communicator over a duplicate of `comm` (so moefold's traffic never matches the caller's).
  static std::unique_ptr<MpiCommunicator> duplicate(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  using Communicator::all_reduce_async;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }
  MPI_Comm mpi_comm() const override { return comm_; }
  const std::shared_ptr<MpiProgressEngine>& engine() const { return engine_; }

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

  // Bytes this process copied through host memory because a buffer lived on a device (device
  // buffers are staged: MPI reads and writes host memory; NCCL takes them directly).
  static int64_t staged_bytes();

  // Point-to-point messages meet as over NCCL (communicator.h): by (peer, lane) in posting
  // order, each carrying its tag, count and element size, which the receive checks, and a send
  // completes only once its receive is posted (MPI_Issend, as NCCL's). For tests; the
  // process starts with it on when MOEFOLD_P2P_LANE_MATCHING=1. Set it on every rank alike,
  // with no message in flight.
  static void set_lane_matching(bool on);

 private:
  // `unpack` runs once MPI is done, before the staged outputs go back to their devices.
  WorkHandle submit(const char* what, MpiProgressEngine::StartFn start,
                    std::shared_ptr<HostStaging> staging,
                    MpiProgressEngine::FinishFn unpack = nullptr);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::shared_ptr<MpiProgressEngine> engine_;
  std::mutex pending_mutex_;
  std::vector<WorkHandle> pending_;  // waited for before the communicator is freed
};

}  // namespace moefold
