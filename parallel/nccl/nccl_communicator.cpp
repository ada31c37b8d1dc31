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

using nccl_support::nccl_type;

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

// ncclGroupStart/End around a grouped call. An exception between them must not leave the group
// open: every later NCCL call of this thread would join it, and the peers would hang.
class NcclGroup {
 public:
  NcclGroup() { MOEFOLD_NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  void end() {
    open_ = false;
    MOEFOLD_NCCL_CHECK(ncclGroupEnd());
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
  MOEFOLD_NCCL_CHECK(ncclGetVersion(&mine[0]));
  cudaGetDevice(&mine[1]);
  std::vector<int> all(2 * static_cast<size_t>(mpi.size()));
  mpi.all_gather(mine, 2, all.data(), CommDType::kInt32);
  std::vector<int> versions, devices;
  for (size_t r = 0; r < all.size(); r += 2) {
    versions.push_back(all[r]);
    devices.push_back(all[r + 1]);
  }
  if (auto problem = nccl_version_problem(versions, devices, NCCL_VERSION_CODE)) {
    return absl::FailedPreconditionError(absl::StrFormat("parallel.communicator: nccl for %s: %s",
                                                         mpi.label() ? *mpi.label() : "a group",
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
    std::shared_ptr<MpiCommunicator> mpi, bool point_to_point) {
  auto* compute = static_cast<cudaStream_t>(cuda_compute_stream());
  if (compute == nullptr) {
    return absl::FailedPreconditionError(
        "parallel.communicator: nccl needs the CUDA backend (training.device: cuda)");
  }
  if (absl::Status s = check_nccl_versions(*mpi); !s.ok()) return s;
  ncclUniqueId id;
  if (mpi->rank() == 0) MOEFOLD_NCCL_CHECK(ncclGetUniqueId(&id));
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
  std::unique_ptr<NcclCommunicator> communicator(new NcclCommunicator(mpi, comm, compute));
  if (point_to_point && mpi->size() > 1) {
    auto lanes = NcclP2pLanes::create(*mpi, compute);
    if (!lanes.ok()) return lanes.status();
    communicator->lanes_ = std::move(*lanes);
  }
  return communicator;
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiCommunicator> mpi, ncclComm_t comm,
                                   cudaStream_t compute)
    : mpi_(std::move(mpi)),
      comm_(comm),
      stream_(std::make_unique<nccl_support::NcclStream>(
          comm, compute, mpi_->label() ? "group " + *mpi_->label() : std::string("a group"))) {
  if (mpi_->label()) set_label(*mpi_->label());
}

NcclCommunicator::~NcclCommunicator() {
  lanes_.reset();
  stream_.reset();  // after every pending operation has completed
  ncclCommDestroy(comm_);
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
  // Counted like MPI's collectives, so that a hang report names the ranks that never arrived.
  return stream_->run(issue, [&] {
    return std::make_shared<WorkState>(what, label(),
                                       label() ? watchdog::enter_collective(*label()) : 0);
  });
}

WorkHandle NcclCommunicator::all_reduce_async(void* data, int64_t count, CommDType dtype,
                                              ReduceOp op) {
  if (!on_device({data})) return mpi_->all_reduce_async(data, count, dtype, op);
  return run("all_reduce", [&] {
    MOEFOLD_NCCL_CHECK(
        ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), comm_, stream_->get()));
  });
}

WorkHandle NcclCommunicator::all_gather_async(const void* send, int64_t count, void* recv,
                                              CommDType dtype) {
  if (!on_device({send, recv})) return mpi_->all_gather_async(send, count, recv, dtype);
  return run("all_gather", [&] {
    MOEFOLD_NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(dtype), comm_, stream_->get()));
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
      MOEFOLD_NCCL_CHECK(ncclBroadcast(r == rank() ? send : nullptr, at(recv, offsets[r], dtype),
                                       recv_counts[r], nccl_type(dtype), r, comm_, stream_->get()));
    }
    group.end();
  });
}

WorkHandle NcclCommunicator::reduce_scatter_async(const void* send, void* recv, int64_t recv_count,
                                                  CommDType dtype, ReduceOp op) {
  if (!on_device({send, recv})) {
    return mpi_->reduce_scatter_async(send, recv, recv_count, dtype, op);
  }
  return run("reduce_scatter", [&] {
    MOEFOLD_NCCL_CHECK(ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op),
                                         comm_, stream_->get()));
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
      MOEFOLD_NCCL_CHECK(ncclReduce(at(send, offsets[r], dtype), r == rank() ? recv : nullptr,
                                    recv_counts[r], nccl_type(dtype), nccl_op(op), r, comm_,
                                    stream_->get()));
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
        MOEFOLD_NCCL_CHECK(ncclSend(at(send, send_offsets[r], dtype), send_counts[r],
                                    nccl_type(dtype), r, comm_, stream_->get()));
      }
      if (recv_counts[r] > 0) {
        MOEFOLD_NCCL_CHECK(ncclRecv(at(recv, recv_offsets[r], dtype), recv_counts[r],
                                    nccl_type(dtype), r, comm_, stream_->get()));
      }
    }
    group.end();
  });
}

WorkHandle NcclCommunicator::broadcast_async(void* data, int64_t count, CommDType dtype, int root) {
  if (!on_device({data})) return mpi_->broadcast_async(data, count, dtype, root);
  return run("broadcast", [&] {
    MOEFOLD_NCCL_CHECK(
        ncclBroadcast(data, data, count, nccl_type(dtype), root, comm_, stream_->get()));
  });
}

// Between ring neighbours device buffers travel in NCCL lanes (nccl_p2p_lanes.h); other peers
// and host buffers take the MPI path, which matches by tag.
WorkHandle NcclCommunicator::send_async(const void* data, int64_t count, CommDType dtype, int peer,
                                        int tag) {
  if (lanes_ != nullptr && lanes_->serves(peer) && on_device({data})) {
    return lanes_->send(data, count, dtype, peer, tag, label());
  }
  return mpi_->send_async(data, count, dtype, peer, tag);
}

WorkHandle NcclCommunicator::recv_async(void* data, int64_t count, CommDType dtype, int peer,
                                        int tag) {
  if (lanes_ != nullptr && lanes_->serves(peer) && on_device({data})) {
    return lanes_->recv(data, count, dtype, peer, tag, label());
  }
  return mpi_->recv_async(data, count, dtype, peer, tag);
}

WorkHandle NcclCommunicator::barrier_async() { return mpi_->barrier_async(); }

}  // namespace moefold
