// Communicator: one backend-neutral interface for the collectives and point-to-point messages of a
// rank group (pointers + element counts + a dtype enum). Backends: MPI (mpi_communicator.h), a
// trivial size-1 SelfCommunicator (self_communicator.h), NCCL (nccl/nccl_communicator.h).
//
// Every operation has an async form returning a WorkHandle and a blocking form (async + wait).
// Rules for callers:
// - Every collective is issued in the same order on all ranks of the group.
// - Buffers passed to an async form must stay alive and untouched until the handle is done;
//   count arrays (std::span arguments) are copied at the call and may be freed at once.
// - Counts are in elements of `dtype`; zero-length contributions are allowed everywhere.
// - Variable-size layouts (the *_v forms) pack the per-rank segments contiguously in rank order
//   of this communicator.
#pragma once

#include <mpi.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/tensor.h"

namespace moefold {

enum class CommDType { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kBFloat16 };
enum class ReduceOp { kSum, kMax };

size_t comm_dtype_size(CommDType dtype);
const char* comm_dtype_name(CommDType dtype);
const char* reduce_op_name(ReduceOp op);
CommDType comm_dtype_of(DType dtype);  // the Tensor dtype's wire type
// A _v collective's per-rank counts: one per rank of a group of `size`, else an error naming
// the collective (`what`).
void check_counts_per_rank(std::span<const int64_t> counts, int size, const char* what);
// The lane of a point-to-point message (tag ≥ 0): pipeline activations and gradients, and the
// context-parallel ring's K/V blocks and their gradients, travel in different lanes.
inline constexpr int kP2pLanes = 2;
constexpr int p2p_lane(int tag) { return tag % kP2pLanes; }

template <class T>
struct CommDTypeOf;
template <>
struct CommDTypeOf<float> { static constexpr CommDType value = CommDType::kFloat32; };
template <>
struct CommDTypeOf<double> { static constexpr CommDType value = CommDType::kFloat64; };
template <>
struct CommDTypeOf<int32_t> { static constexpr CommDType value = CommDType::kInt32; };
template <>
struct CommDTypeOf<int64_t> { static constexpr CommDType value = CommDType::kInt64; };
template <>
struct CommDTypeOf<uint8_t> { static constexpr CommDType value = CommDType::kUInt8; };
template <class T>
inline constexpr CommDType comm_dtype_v = CommDTypeOf<std::remove_const_t<T>>::value;

// Completion state of one piece of async work, shared by the backend and the handle. The backend
// calls complete() exactly once, from any thread.
class WorkState {
 public:
  WorkState() = default;
  // `what` ("all_reduce") and `group` ("dp [0,2]") name the work for the watchdog's report;
  // `sequence` is its number among the group's collectives (watchdog::enter_collective).
  WorkState(const char* what, std::shared_ptr<const std::string> group, uint64_t sequence = 0)
      : what_(what), group_(std::move(group)), sequence_(sequence) {}

  void complete(std::string error = {});
  bool is_done() const;
  // Throws InternalError if the backend reported an error. A watched wait (parallel/watchdog.h):
  // past parallel.distributed_timeout_minutes the job ends with a report.
  void wait();

 private:
  const char* what_ = "communication";
  std::shared_ptr<const std::string> group_;
  uint64_t sequence_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::string error_;
};

// Handle to async work. A default-constructed handle is already done (no work).
class WorkHandle {
 public:
  WorkHandle() = default;
  explicit WorkHandle(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}

  void wait();           // blocks until the work finished; buffers may then be reused
  bool is_done() const;  // never blocks

 private:
  std::shared_ptr<WorkState> state_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The MPI communicator beneath, for libraries that do their own MPI (parallel HDF5's MPI-IO);
  // MPI_COMM_NULL for a backend without one (they then run serially).
  virtual MPI_Comm mpi_comm() const { return MPI_COMM_NULL; }
  // The group's name in reports (the watchdog's): its kind and world ranks, e.g. "dp [0,2]".
  void set_label(std::string label) {
    label_ = std::make_shared<const std::string>(std::move(label));
  }
  const std::shared_ptr<const std::string>& label() const { return label_; }

  // In place: data (count) becomes the elementwise reduction over all ranks.
  virtual WorkHandle all_reduce_async(void* data, int64_t count, CommDType dtype,
                                      ReduceOp op) = 0;
  // recv (size() * count) = concatenation of every rank's send (count), in rank order.
  virtual WorkHandle all_gather_async(const void* send, int64_t count, void* recv,
                                      CommDType dtype) = 0;
  // recv (sum recv_counts) = concatenation of every rank's send; recv_counts (size()) gives each
  // rank's contribution, and recv_counts[rank()] == send_count.
  virtual WorkHandle all_gather_v_async(const void* send, int64_t send_count, void* recv,
                                        std::span<const int64_t> recv_counts,
                                        CommDType dtype) = 0;
  // send (size() * recv_count) is reduced over ranks; rank r receives segment r.
  virtual WorkHandle reduce_scatter_async(const void* send, void* recv, int64_t recv_count,
                                          CommDType dtype, ReduceOp op) = 0;
  // send (sum recv_counts) is reduced over ranks; rank r receives segment r of recv_counts[r].
  virtual WorkHandle reduce_scatter_v_async(const void* send, void* recv,
                                            std::span<const int64_t> recv_counts,
                                            CommDType dtype, ReduceOp op) = 0;
  // send (size() * count): segment r goes to rank r; recv (size() * count): segment r came
  // from rank r.
  virtual WorkHandle all_to_all_async(const void* send, void* recv, int64_t count,
                                      CommDType dtype) = 0;
  // send_counts[r] elements go to rank r, recv_counts[r] come from rank r (both size()).
  virtual WorkHandle all_to_all_v_async(const void* send, std::span<const int64_t> send_counts,
                                        void* recv, std::span<const int64_t> recv_counts,
                                        CommDType dtype) = 0;
  virtual WorkHandle broadcast_async(void* data, int64_t count, CommDType dtype, int root) = 0;
  // Point-to-point. Over MPI a receive meets the peer's send of the same tag. NCCL has no tags:
  // its messages travel in lanes, one per (sender, receiver, p2p_lane(tag)), and meet in
  // posting order, the n-th send of a lane with the n-th receive of that lane. So callers post
  // each lane's messages in the same order at both ends (MOEFOLD_P2P_LANE_MATCHING=1 makes MPI
  // match as NCCL does and check every message's tag).
  virtual WorkHandle send_async(const void* data, int64_t count, CommDType dtype, int peer,
                                int tag = 0) = 0;
  virtual WorkHandle recv_async(void* data, int64_t count, CommDType dtype, int peer,
                                int tag = 0) = 0;
  virtual WorkHandle barrier_async() = 0;

  // Blocking forms.
  void all_reduce(void* data, int64_t count, CommDType dtype, ReduceOp op) {
    all_reduce_async(data, count, dtype, op).wait();
  }
  void all_gather(const void* send, int64_t count, void* recv, CommDType dtype) {
    all_gather_async(send, count, recv, dtype).wait();
  }
  void all_gather_v(const void* send, int64_t send_count, void* recv,
                    std::span<const int64_t> recv_counts, CommDType dtype) {
    all_gather_v_async(send, send_count, recv, recv_counts, dtype).wait();
  }
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommDType dtype,
                      ReduceOp op) {
    reduce_scatter_async(send, recv, recv_count, dtype, op).wait();
  }
  void reduce_scatter_v(const void* send, void* recv, std::span<const int64_t> recv_counts,
                        CommDType dtype, ReduceOp op) {
    reduce_scatter_v_async(send, recv, recv_counts, dtype, op).wait();
  }
  void all_to_all(const void* send, void* recv, int64_t count, CommDType dtype) {
    all_to_all_async(send, recv, count, dtype).wait();
  }
  void all_to_all_v(const void* send, std::span<const int64_t> send_counts, void* recv,
                    std::span<const int64_t> recv_counts, CommDType dtype) {
    all_to_all_v_async(send, send_counts, recv, recv_counts, dtype).wait();
  }
  void broadcast(void* data, int64_t count, CommDType dtype, int root) {
    broadcast_async(data, count, dtype, root).wait();
  }
  void send(const void* data, int64_t count, CommDType dtype, int peer, int tag = 0) {
    send_async(data, count, dtype, peer, tag).wait();
  }
  void recv(void* data, int64_t count, CommDType dtype, int peer, int tag = 0) {
    recv_async(data, count, dtype, peer, tag).wait();
  }
  void barrier() { barrier_async().wait(); }

  // Typed conveniences over the forms above.
  template <class T>
  void all_reduce(std::span<T> data, ReduceOp op = ReduceOp::kSum) {
    all_reduce(data.data(), static_cast<int64_t>(data.size()), comm_dtype_v<T>, op);
  }
  template <class T>
  WorkHandle all_reduce_async(std::span<T> data, ReduceOp op = ReduceOp::kSum) {
    return all_reduce_async(data.data(), static_cast<int64_t>(data.size()), comm_dtype_v<T>, op);
  }
  template <class T>
  void broadcast(std::span<T> data, int root) {
    broadcast(data.data(), static_cast<int64_t>(data.size()), comm_dtype_v<T>, root);
  }
  // Exchanges per-rank element counts before a variable-size all_to_all_v: returns recv_counts
  // (size()) where recv_counts[r] is what rank r announced for this rank in its send_counts.
  std::vector<int64_t> all_to_all_counts(std::span<const int64_t> send_counts);
  // Every rank's send_count, in rank order (the recv_counts of a following all_gather_v).
  std::vector<int64_t> all_gather_counts(int64_t send_count);

 private:
  std::shared_ptr<const std::string> label_;
};

}  // namespace moefold
