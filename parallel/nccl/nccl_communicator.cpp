#include "parallel/nccl/nccl_communicator.h"

#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "parallel/watchdog.h"
#include "tensor/backend.h"
#include "tensor/check.h"
#include "tensor/cuda_entry.h"
#include "tensor/device_versions.h"

namespace moefold {
namespace {

[[noreturn]] void fail_call(const char* call, const char* file, int line, const char* error) {
  int device = -1;
  cudaGetDevice(&device);
  throw InternalError(
      absl::StrFormat("%s:%d: %s failed on cuda:%d: %s", file, line, call, device, error));
}

}  // namespace
}  // namespace moefold

#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    const ncclResult_t nccl_result_ = (call);                                             \
    if (nccl_result_ != ncclSuccess) {                                                    \
      ::moefold::fail_call(#call, __FILE__, __LINE__, ncclGetErrorString(nccl_result_));  \
    }                                                                                     \
  } while (0)
#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    const cudaError_t cuda_result_ = (call);                                              \
    if (cuda_result_ != cudaSuccess) {                                                    \
      ::moefold::fail_call(#call, __FILE__, __LINE__, cudaGetErrorString(cuda_result_));  \
    }                                                                                     \
  } while (0)

namespace moefold {
namespace {

ncclDataType_t nccl_type(CommDType dtype) {
  switch (dtype) {
    case CommDType::kFloat32: return ncclFloat32;
    case CommDType::kFloat64: return ncclFloat64;
    case CommDType::kInt32: return ncclInt32;
    case CommDType::kInt64: return ncclInt64;
    case CommDType::kUInt8: return ncclUint8;
    case CommDType::kBFloat16: return ncclBfloat16;
  }
  MOEFOLD_CHECK(false, "unknown CommDType");
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

// ncclGroupStart/End around a grouped call. An exception between them must not leave the group
// open: every later NCCL call of this thread would join it, and the peers would hang.
class NcclGroup {
 public:
  NcclGroup() { NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  void end() {
    open_ = false;
    NCCL_CHECK(ncclGroupEnd());
  }

 private:
  bool open_ = true;
};

const char* at(const void* base, int64_t elements, CommDType dtype) {
  return static_cast<const char*>(base) + elements * static_cast<int64_t>(comm_dtype_size(dtype));
}
char* at(void* base, int64_t elements, CommDType dtype) {
  return static_cast<char*>(base) + elements * static_cast<int64_t>(comm_dtype_size(dtype));
}

// Every rank of the group must load an NCCL at least as new as the one built against, and the
// same one (their protocols differ between versions): one line naming the rank and its device.
absl::Status check_nccl_versions(MpiCommunicator& mpi) {
  int mine[2] = {0, -1};  // version, device
  NCCL_CHECK(ncclGetVersion(&mine[0]));
  cudaGetDevice(&mine[1]);
  std::vector<int> all(2 * static_cast<size_t>(mpi.size()));
  mpi.all_gather(mine, 2, all.data(), CommDType::kInt32);
  std::vector<int> versions, devices;
  for (size_t r = 0; r < all.size(); r += 2) {
    versions.push_back(all[r]);
    devices.push_back(all[r + 1]);
  }
  if (auto problem = nccl_version_problem(versions, devices, NCCL_VERSION_CODE)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "parallel.communicator: nccl for %s: %s", mpi.label() ? *mpi.label() : "a group",
        *problem));
  }
  return absl::OkStatus();
}

std::vector<int64_t> offsets_of(std::span<const int64_t> counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
  return offsets;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::create(
    std::shared_ptr<MpiCommunicator> mpi) {
  auto* compute = static_cast<cudaStream_t>(cuda_compute_stream());
  if (compute == nullptr) {
    return absl::FailedPreconditionError(
        "parallel.communicator: nccl needs the CUDA backend (training.device: cuda)");
  }
  if (absl::Status s = check_nccl_versions(*mpi); !s.ok()) return s;
  ncclUniqueId id;
  if (mpi->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  mpi->broadcast(&id, sizeof(id), CommDType::kUInt8, 0);
  ncclComm_t comm = nullptr;
  const ncclResult_t result = ncclCommInitRank(&comm, mpi->size(), id, mpi->rank());
  if (result != ncclSuccess) {
    int device = -1;
    cudaGetDevice(&device);
    return absl::InternalError(absl::StrFormat(
        "ncclCommInitRank for %s failed on rank %d of %d (cuda:%d): %s%s",
        mpi->label() ? *mpi->label() : "a group", mpi->rank(), mpi->size(), device,
        ncclGetErrorString(result),
        result == ncclInvalidUsage ? " (ranks sharing one GPU need parallel.communicator: mpi)"
                                   : ""));
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(mpi), comm, compute));
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiCommunicator> mpi, ncclComm_t comm,
                                   cudaStream_t compute)
    : mpi_(std::move(mpi)), comm_(comm), compute_(compute) {
  if (mpi_->label()) set_label(*mpi_->label());
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  completer_ = std::thread([this, device] {
    cudaSetDevice(device);
    complete_in_order();
  });
}

NcclCommunicator::~NcclCommunicator() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  completer_.join();  // after every pending operation has completed
  ncclCommDestroy(comm_);
  cudaStreamDestroy(stream_);
}

void NcclCommunicator::complete_in_order() {
  for (;;) {
    Pending next;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
      if (pending_.empty()) return;  // stopping, nothing left
      next = std::move(pending_.front());
      pending_.pop_front();
    }
    const cudaError_t status = cudaEventSynchronize(next.done);
    cudaEventDestroy(next.done);
    ncclResult_t async_error = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async_error);
    if (status != cudaSuccess) {
      next.state->complete(std::string("NCCL work failed: ") + cudaGetErrorString(status));
    } else if (async_error != ncclSuccess) {
      next.state->complete(std::string("NCCL work failed: ") + ncclGetErrorString(async_error));
    } else {
      next.state->complete();
    }
  }
}

bool NcclCommunicator::on_device(std::initializer_list<const void*> buffers) {
  for (const void* buffer : buffers) {
    if (buffer == nullptr || device_of_pointer(buffer) == Device::kCuda) continue;
    // A zero-count chunk at a device buffer's end passes its one-past-the-end address, which
    // may lie past every device allocation: the byte before it says where the buffer is, so
    // that this rank takes the path its peers take.
    if (device_of_pointer(static_cast<const char*>(buffer) - 1) != Device::kCuda) return false;
  }
  return true;
}

template <class Issue>
WorkHandle NcclCommunicator::run(const char* what, Issue issue) {
  // One issuing thread at a time: ranks must issue a communicator's collectives in one order.
  std::lock_guard<std::mutex> issuing(issue_mutex_);
  cudaEvent_t ready = nullptr, done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(ready, compute_));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
  CUDA_CHECK(cudaEventDestroy(ready));  // the wait is enqueued; the event may go
  issue();
  // Blocking sync: the completion thread sleeps in cudaEventSynchronize instead of spinning a
  // core per communicator.
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming | cudaEventBlockingSync));
  CUDA_CHECK(cudaEventRecord(done, stream_));
  // Counted like MPI's collectives, so that a hang report names the ranks that never arrived.
  auto state = std::make_shared<WorkState>(what, label(),
                                           label() ? watchdog::enter_collective(*label()) : 0);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back({done, state});
  }
  cv_.notify_one();
  return WorkHandle(std::move(state));
}

WorkHandle NcclCommunicator::all_reduce_async(void* data, int64_t count, CommDType dtype,
                                              ReduceOp op) {
  if (!on_device({data})) return mpi_->all_reduce_async(data, count, dtype, op);
  return run("all_reduce", [&] {
    NCCL_CHECK(ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::all_gather_async(const void* send, int64_t count, void* recv,
                                              CommDType dtype) {
  if (!on_device({send, recv})) return mpi_->all_gather_async(send, count, recv, dtype);
  return run("all_gather", [&] {
    NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(dtype), comm_, stream_));
  });
}

WorkHandle NcclCommunicator::all_gather_v_async(const void* send, int64_t send_count, void* recv,
                                                std::span<const int64_t> recv_counts,
                                                CommDType dtype) {
  if (!on_device({send, recv})) {
    return mpi_->all_gather_v_async(send, send_count, recv, recv_counts, dtype);
  }
  check_counts_per_rank(recv_counts, size(), "all_gather_v");
  MOEFOLD_CHECK(recv_counts[rank()] == send_count,
                "all_gather_v: rank " << rank() << " sends " << send_count << " but "
                                      << recv_counts[rank()] << " are expected from it");
  const std::vector<int64_t> offsets = offsets_of(recv_counts);
  return run("all_gather_v", [&] {
    NcclGroup group;
    for (int r = 0; r < size(); ++r) {
      if (recv_counts[r] == 0) continue;
      NCCL_CHECK(ncclBroadcast(r == rank() ? send : nullptr, at(recv, offsets[r], dtype),
                               recv_counts[r], nccl_type(dtype), r, comm_, stream_));
    }
    group.end();
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                  int64_t recv_count, CommDType dtype,
                                                  ReduceOp op) {
  if (!on_device({send, recv})) {
    return mpi_->reduce_scatter_async(send, recv, recv_count, dtype, op);
  }
  return run("reduce_scatter", [&] {
    NCCL_CHECK(ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op), comm_,
                                 stream_));
  });
}

WorkHandle NcclCommunicator::reduce_scatter_v_async(const void* send, void* recv,
                                                    std::span<const int64_t> recv_counts,
                                                    CommDType dtype, ReduceOp op) {
  if (!on_device({send, recv})) {
    return mpi_->reduce_scatter_v_async(send, recv, recv_counts, dtype, op);
  }
  check_counts_per_rank(recv_counts, size(), "reduce_scatter_v");
  const std::vector<int64_t> offsets = offsets_of(recv_counts);
  return run("reduce_scatter_v", [&] {
    NcclGroup group;
    for (int r = 0; r < size(); ++r) {
      if (recv_counts[r] == 0) continue;
      NCCL_CHECK(ncclReduce(at(send, offsets[r], dtype), r == rank() ? recv : nullptr,
                            recv_counts[r], nccl_type(dtype), nccl_op(op), r, comm_, stream_));
    }
    group.end();
  });
}

WorkHandle NcclCommunicator::all_to_all_async(const void* send, void* recv, int64_t count,
                                              CommDType dtype) {
  const std::vector<int64_t> counts(size(), count);
  return all_to_all_v_async(send, counts, recv, counts, dtype);
}

WorkHandle NcclCommunicator::all_to_all_v_async(const void* send,
                                                std::span<const int64_t> send_counts, void* recv,
                                                std::span<const int64_t> recv_counts,
                                                CommDType dtype) {
  if (!on_device({send, recv})) {
    return mpi_->all_to_all_v_async(send, send_counts, recv, recv_counts, dtype);
  }
  check_counts_per_rank(send_counts, size(), "all_to_all_v");
  check_counts_per_rank(recv_counts, size(), "all_to_all_v");
  const std::vector<int64_t> send_offsets = offsets_of(send_counts);
  const std::vector<int64_t> recv_offsets = offsets_of(recv_counts);
  return run("all_to_all_v", [&] {
    NcclGroup group;
    for (int r = 0; r < size(); ++r) {
      if (send_counts[r] > 0) {
        NCCL_CHECK(ncclSend(at(send, send_offsets[r], dtype), send_counts[r], nccl_type(dtype),
                            r, comm_, stream_));
      }
      if (recv_counts[r] > 0) {
        NCCL_CHECK(ncclRecv(at(recv, recv_offsets[r], dtype), recv_counts[r], nccl_type(dtype),
                            r, comm_, stream_));
      }
    }
    group.end();
  });
}

WorkHandle NcclCommunicator::broadcast_async(void* data, int64_t count, CommDType dtype,
                                             int root) {
  if (!on_device({data})) return mpi_->broadcast_async(data, count, dtype, root);
  return run("broadcast", [&] {
    NCCL_CHECK(ncclBroadcast(data, data, count, nccl_type(dtype), root, comm_, stream_));
  });
}

// Point-to-point (pipeline stages, context-parallel rings) takes the MPI path, staged through
// host memory when the buffers are on the GPU: NCCL has no tags, and a ncclRecv and a ncclSend
// issued apart on each rank of a ring deadlock (NCCL's p2p guide: calls that must progress
// together have to be in one ncclGroupStart/End), which this one-call-at-a-time interface
// cannot express. MPI matches by tag and progresses both.
WorkHandle NcclCommunicator::send_async(const void* data, int64_t count, CommDType dtype,
                                        int peer, int tag) {
  return mpi_->send_async(data, count, dtype, peer, tag);
}

WorkHandle NcclCommunicator::recv_async(void* data, int64_t count, CommDType dtype, int peer,
                                        int tag) {
  return mpi_->recv_async(data, count, dtype, peer, tag);
}

WorkHandle NcclCommunicator::barrier_async() { return mpi_->barrier_async(); }

}  // namespace moefold
