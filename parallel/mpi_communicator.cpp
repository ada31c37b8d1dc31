#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <cstdlib>
#include <numeric>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "parallel/watchdog.h"
#include "tensor/backend.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

MPI_Datatype mpi_type(CommDType dtype) {
  switch (dtype) {
    case CommDType::kFloat32: return MPI_FLOAT;
    case CommDType::kFloat64: return MPI_DOUBLE;
    case CommDType::kInt32: return MPI_INT32_T;
    case CommDType::kInt64: return MPI_INT64_T;
    case CommDType::kUInt8: return MPI_UINT8_T;
    case CommDType::kBFloat16: return MPI_UINT16_T;  // moved as bits; reduced by bf16_op
  }
  MOEFOLD_CHECK(false, "unknown CommDType " << static_cast<int>(dtype));
}

// MPI has no bfloat16: its reductions widen each pair exactly, add (or compare) in float32 and
// round to nearest even, as a bf16 NCCL reduction does.
template <ReduceOp kOp>
void bf16_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = bf16_bits_to_float(a[i]), y = bf16_bits_to_float(b[i]);
    b[i] = float_to_bf16_bits(kOp == ReduceOp::kSum ? x + y : std::max(x, y));
  }
}

MPI_Op bf16_op(ReduceOp op) {
  static const std::array<MPI_Op, 2> ops = [] {
    std::array<MPI_Op, 2> created;
    MPI_Op_create(&bf16_reduce<ReduceOp::kSum>, 1, &created[0]);
    MPI_Op_create(&bf16_reduce<ReduceOp::kMax>, 1, &created[1]);
    return created;
  }();
  return ops[op == ReduceOp::kSum ? 0 : 1];
}

MPI_Op mpi_op(CommDType dtype, ReduceOp op) {
  if (dtype == CommDType::kBFloat16) return bf16_op(op);
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
  }
  MOEFOLD_CHECK(false, "unknown ReduceOp " << static_cast<int>(op));
}

// MPI counts and displacements are int.
int to_int(int64_t count, const char* what) {
  MOEFOLD_CHECK(count >= 0 && count <= INT_MAX, what << " count " << count
                                                     << " is outside the MPI int range");
  return static_cast<int>(count);
}

// Per-rank counts and their packed displacements, checked against the group size.
struct CountsAndDisplacements {
  std::vector<int> counts;
  std::vector<int> displacements;
};

CountsAndDisplacements packed(std::span<const int64_t> counts, int size, const char* what) {
  check_counts_per_rank(counts, size, what);
  CountsAndDisplacements result;
  int64_t offset = 0;
  for (int64_t count : counts) {
    result.counts.push_back(to_int(count, what));
    result.displacements.push_back(to_int(offset, what));
    offset += count;
  }
  to_int(offset, what);
  return result;
}

std::atomic<int64_t> g_staged_bytes{0};

void check_rc(int rc, const char* call) {
  if (rc != MPI_SUCCESS) throw InternalError(std::string(call) + ": " + mpi_error_string(rc));
}

int64_t bytes_of(int64_t count, CommDType dtype) {
  return count * static_cast<int64_t>(comm_dtype_size(dtype));
}

std::atomic<bool> g_lane_matching{[] {
  const char* value = std::getenv("MOEFOLD_P2P_LANE_MATCHING");
  return value != nullptr && std::string_view(value) == "1";
}()};

// What a lane message says of itself, checked where it arrives.
struct LaneHeader {
  int64_t tag;
  int64_t count;
  int64_t element_bytes;
  bool operator==(const LaneHeader&) const = default;
};

LaneHeader lane_header(int tag, int64_t count, CommDType dtype) {
  return {tag, count, static_cast<int64_t>(comm_dtype_size(dtype))};
}

// A lane message: the header, then room for the payload.
std::shared_ptr<std::vector<char>> lane_message(const LaneHeader& header) {
  auto message = std::make_shared<std::vector<char>>(sizeof(LaneHeader) +
                                                     header.count * header.element_bytes);
  std::memcpy(message->data(), &header, sizeof(header));
  return message;
}

int64_t total(std::span<const int64_t> counts) {
  return std::accumulate(counts.begin(), counts.end(), int64_t{0});
}

}  // namespace

// MPI reads and writes host memory. Buffers that live on a device are copied into host tensors
// (counted by MemoryStats) before the call, and the ones MPI writes are copied back once it is
// done, on the engine thread. Host buffers pass through untouched.
class HostStaging {
 public:
  // The buffer MPI reads (`bytes` of it).
  const void* input(const void* buffer, int64_t bytes) {
    if (bytes <= 0 || device_of_pointer(buffer) == Device::kCpu) return buffer;
    Tensor host = host_buffer(bytes);
    ops::copy_memory(host.raw_data(), buffer, static_cast<size_t>(bytes));
    held_.push_back(host);
    return host.raw_data();
  }
  // The buffer MPI writes; `in_place` buffers are read first too.
  void* output(void* buffer, int64_t bytes, bool in_place = false) {
    if (bytes <= 0 || device_of_pointer(buffer) == Device::kCpu) return buffer;
    Tensor host = host_buffer(bytes);
    if (in_place) ops::copy_memory(host.raw_data(), buffer, static_cast<size_t>(bytes));
    outputs_.push_back({buffer, host, bytes});
    return host.raw_data();
  }
  bool empty() const { return held_.empty() && outputs_.empty(); }
  // After MPI finished: the outputs back to their devices.
  void finish() {
    for (const Output& out : outputs_) {
      ops::copy_memory(out.device, out.host.raw_data(), static_cast<size_t>(out.bytes));
    }
  }

 private:
  struct Output {
    void* device;
    Tensor host;
    int64_t bytes;
  };
  static Tensor host_buffer(int64_t bytes) {
    g_staged_bytes += bytes;
    return Tensor::empty({(bytes + 3) / 4}, DType::kFloat32, Device::kCpu);
  }
  std::vector<Tensor> held_;
  std::vector<Output> outputs_;
};

int64_t MpiCommunicator::staged_bytes() { return g_staged_bytes.load(); }

void MpiCommunicator::set_lane_matching(bool on) { g_lane_matching = on; }

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::shared_ptr<MpiProgressEngine> engine)
    : comm_(comm), engine_(std::move(engine)) {
  MOEFOLD_CHECK(comm_ != MPI_COMM_NULL && engine_ != nullptr);
  std::unique_lock<std::mutex> lock = engine_->lock_mpi();
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::duplicate(MPI_Comm comm) {
  std::shared_ptr<MpiProgressEngine> engine = MpiProgressEngine::shared();
  MPI_Comm copy = MPI_COMM_NULL;
  {
    std::unique_lock<std::mutex> lock = engine->lock_mpi();
    check_rc(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup");
  }
  return std::make_unique<MpiCommunicator>(copy, std::move(engine));
}

MpiCommunicator::~MpiCommunicator() {
  for (WorkHandle& handle : pending_) {
    try {
      handle.wait();
    } catch (const InternalError&) {
      // Already reported to whoever waited on it; the communicator is going away regardless.
    }
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    std::unique_lock<std::mutex> lock = engine_->lock_mpi();
    MPI_Comm_free(&comm_);
  }
}

WorkHandle MpiCommunicator::submit(const char* what, MpiProgressEngine::StartFn start,
                                   std::shared_ptr<HostStaging> staging,
                                   MpiProgressEngine::FinishFn unpack) {
  MpiProgressEngine::FinishFn finish;
  if (unpack || !staging->empty()) {
    finish = [staging, unpack = std::move(unpack)] {
      if (unpack) unpack();
      staging->finish();
    };
  }
  // Collectives are counted for the watchdog's arrival record; p2p pairs are not symmetric.
  const bool collective = std::strcmp(what, "send") != 0 && std::strcmp(what, "recv") != 0;
  const uint64_t sequence = collective && label() ? watchdog::enter_collective(*label()) : 0;
  WorkHandle handle =
      engine_->submit(std::move(start), what, label(), std::move(finish), sequence);
  std::lock_guard<std::mutex> lock(pending_mutex_);
  std::erase_if(pending_, [](const WorkHandle& h) { return h.is_done(); });
  pending_.push_back(handle);
  return handle;
}

WorkHandle MpiCommunicator::all_reduce_async(void* data, int64_t count, CommDType dtype,
                                             ReduceOp op) {
  const int n = to_int(count, "all_reduce");
  const MPI_Op mop = mpi_op(dtype, op);
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  void* buffer = staging->output(data, bytes_of(count, dtype), true);
  return submit("all_reduce", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Iallreduce(MPI_IN_PLACE, buffer, n, mpi_type(dtype), mop, comm, &request),
             "MPI_Iallreduce");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::all_gather_async(const void* send, int64_t count, void* recv,
                                             CommDType dtype) {
  const int n = to_int(count, "all_gather");
  to_int(count * size_, "all_gather");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(count, dtype));
  void* out = staging->output(recv, bytes_of(count * size_, dtype));
  return submit("all_gather", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    const MPI_Datatype type = mpi_type(dtype);
    check_rc(MPI_Iallgather(in, n, type, out, n, type, comm, &request), "MPI_Iallgather");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::all_gather_v_async(const void* send, int64_t send_count, void* recv,
                                               std::span<const int64_t> recv_counts,
                                               CommDType dtype) {
  auto layout = std::make_shared<CountsAndDisplacements>(
      packed(recv_counts, size_, "all_gather_v"));
  MOEFOLD_CHECK(recv_counts[rank_] == send_count, "all_gather_v: send_count "
                                                      << send_count << " but recv_counts["
                                                      << rank_ << "] is " << recv_counts[rank_]);
  const int n = to_int(send_count, "all_gather_v");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(send_count, dtype));
  void* out = staging->output(recv, bytes_of(total(recv_counts), dtype));
  return submit("all_gather_v", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    const MPI_Datatype type = mpi_type(dtype);
    check_rc(MPI_Iallgatherv(in, n, type, out, layout->counts.data(),
                             layout->displacements.data(), type, comm, &request),
             "MPI_Iallgatherv");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::reduce_scatter_async(const void* send, void* recv,
                                                 int64_t recv_count, CommDType dtype,
                                                 ReduceOp op) {
  const int n = to_int(recv_count, "reduce_scatter");
  to_int(recv_count * size_, "reduce_scatter");
  const MPI_Op mop = mpi_op(dtype, op);
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(recv_count * size_, dtype));
  void* out = staging->output(recv, bytes_of(recv_count, dtype));
  return submit("reduce_scatter", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Ireduce_scatter_block(in, out, n, mpi_type(dtype), mop, comm, &request),
             "MPI_Ireduce_scatter_block");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::reduce_scatter_v_async(const void* send, void* recv,
                                                   std::span<const int64_t> recv_counts,
                                                   CommDType dtype, ReduceOp op) {
  auto layout = std::make_shared<CountsAndDisplacements>(
      packed(recv_counts, size_, "reduce_scatter_v"));
  const MPI_Op mop = mpi_op(dtype, op);
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(total(recv_counts), dtype));
  void* out = staging->output(recv, bytes_of(recv_counts[rank_], dtype));
  return submit("reduce_scatter_v", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Ireduce_scatter(in, out, layout->counts.data(), mpi_type(dtype), mop, comm,
                                 &request),
             "MPI_Ireduce_scatter");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::all_to_all_async(const void* send, void* recv, int64_t count,
                                             CommDType dtype) {
  const int n = to_int(count, "all_to_all");
  to_int(count * size_, "all_to_all");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(count * size_, dtype));
  void* out = staging->output(recv, bytes_of(count * size_, dtype));
  return submit("all_to_all", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    const MPI_Datatype type = mpi_type(dtype);
    check_rc(MPI_Ialltoall(in, n, type, out, n, type, comm, &request), "MPI_Ialltoall");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::all_to_all_v_async(const void* send,
                                               std::span<const int64_t> send_counts, void* recv,
                                               std::span<const int64_t> recv_counts,
                                               CommDType dtype) {
  auto send_layout = std::make_shared<CountsAndDisplacements>(
      packed(send_counts, size_, "all_to_all_v send"));
  auto recv_layout = std::make_shared<CountsAndDisplacements>(
      packed(recv_counts, size_, "all_to_all_v recv"));
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(send, bytes_of(total(send_counts), dtype));
  void* out = staging->output(recv, bytes_of(total(recv_counts), dtype));
  return submit("all_to_all_v", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    const MPI_Datatype type = mpi_type(dtype);
    check_rc(MPI_Ialltoallv(in, send_layout->counts.data(), send_layout->displacements.data(),
                            type, out, recv_layout->counts.data(),
                            recv_layout->displacements.data(), type, comm, &request),
             "MPI_Ialltoallv");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::broadcast_async(void* data, int64_t count, CommDType dtype,
                                            int root) {
  MOEFOLD_CHECK(root >= 0 && root < size_, "broadcast root " << root << " of " << size_);
  const int n = to_int(count, "broadcast");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  void* buffer = staging->output(data, bytes_of(count, dtype), rank_ == root);
  return submit("broadcast", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Ibcast(buffer, n, mpi_type(dtype), root, comm, &request), "MPI_Ibcast");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::send_async(const void* data, int64_t count, CommDType dtype,
                                       int peer, int tag) {
  MOEFOLD_CHECK(peer >= 0 && peer < size_, "send to peer " << peer << " of " << size_);
  const int n = to_int(count, "send");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  const void* in = staging->input(data, bytes_of(count, dtype));
  if (g_lane_matching.load()) {
    auto message = lane_message(lane_header(tag, count, dtype));
    if (count > 0) std::memcpy(message->data() + sizeof(LaneHeader), in, bytes_of(count, dtype));
    const int bytes = to_int(static_cast<int64_t>(message->size()), "send");
    return submit("send", [=] {
      MPI_Request request = MPI_REQUEST_NULL;
      // Synchronous mode, as NCCL's: the send completes only once its receive is posted.
      check_rc(MPI_Issend(message->data(), bytes, MPI_BYTE, peer, p2p_lane(tag), comm, &request),
               "MPI_Issend");
      return request;
    }, staging);
  }
  return submit("send", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Isend(in, n, mpi_type(dtype), peer, tag, comm, &request), "MPI_Isend");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::recv_async(void* data, int64_t count, CommDType dtype, int peer,
                                       int tag) {
  MOEFOLD_CHECK(peer >= 0 && peer < size_, "recv from peer " << peer << " of " << size_);
  const int n = to_int(count, "recv");
  MPI_Comm comm = comm_;
  auto staging = std::make_shared<HostStaging>();
  void* out = staging->output(data, bytes_of(count, dtype));
  if (g_lane_matching.load()) {
    const LaneHeader expected = lane_header(tag, count, dtype);
    auto message = lane_message(expected);
    const int bytes = to_int(static_cast<int64_t>(message->size()), "recv");
    const std::string where = absl::StrCat("rank ", rank_, label() ? " of " + *label() : "");
    auto unpack = [=] {
      LaneHeader got;
      std::memcpy(&got, message->data(), sizeof(got));
      if (!(got == expected)) {
        throw InternalError(absl::StrCat(
            "point-to-point lane order: ", where, " expected tag ", tag, " (", count, " × ",
            expected.element_bytes, " bytes) from rank ", peer, " in lane ", p2p_lane(tag),
            " but got tag ", got.tag, " (", got.count, " × ", got.element_bytes,
            " bytes); over NCCL the two would pair wrongly"));
      }
      if (count > 0) std::memcpy(out, message->data() + sizeof(LaneHeader), bytes_of(count, dtype));
    };
    return submit("recv", [=] {
      MPI_Request request = MPI_REQUEST_NULL;
      check_rc(MPI_Irecv(message->data(), bytes, MPI_BYTE, peer, p2p_lane(tag), comm, &request),
               "MPI_Irecv");
      return request;
    }, staging, std::move(unpack));
  }
  return submit("recv", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Irecv(out, n, mpi_type(dtype), peer, tag, comm, &request), "MPI_Irecv");
    return request;
  }, staging);
}

WorkHandle MpiCommunicator::barrier_async() {
  MPI_Comm comm = comm_;
  return submit("barrier", [=] {
    MPI_Request request = MPI_REQUEST_NULL;
    check_rc(MPI_Ibarrier(comm, &request), "MPI_Ibarrier");
    return request;
  }, std::make_shared<HostStaging>());
}

}  // namespace moefold
