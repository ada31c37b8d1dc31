// SelfCommunicator: the size-1 group. Collectives are copies, completed before they return, so
// that TP=1 (or any size-1 group) runs the same code path as a real group without MPI.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "parallel/communicator.h"

namespace moefold {

class SelfCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce_async;

  int rank() const override { return 0; }
  int size() const override { return 1; }

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
  // A message to self is buffered at send; the matching recv (same tag) must come after it.
  WorkHandle send_async(const void* data, int64_t count, CommDType dtype, int peer,
                        int tag = 0) override;
  WorkHandle recv_async(void* data, int64_t count, CommDType dtype, int peer,
                        int tag = 0) override;
  WorkHandle barrier_async() override { return WorkHandle(); }

 private:
  std::mutex mailbox_mutex_;
  std::map<int, std::deque<std::vector<uint8_t>>> mailbox_;  // tag -> messages in send order
};

}  // namespace moefold
