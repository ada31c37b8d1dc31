// The emulated NCCL (include/nccl.h) over MPI, for ranks on emulated devices. Reductions are
// computed from every rank's contribution, in rank order, in float for float32 and bf16 (as
// NCCL accumulates them), in double for float64 and exactly for integers. Refusals print one
// line, as NCCL's warnings do, and return NCCL's error code.
#include <mpi.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "tensor/kernel_math.h"
#include "tests/tensor/cuda_emulation/emulated_memory.h"
#include "tests/tensor/cuda_emulation/emulated_streams.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;  // the communicator's ranks, in its rank order
  int rank = 0, size = 0, device = 0;
  std::mutex mutex;
  std::set<int> connected;         // peers of a first point-to-point message, connected since
  std::set<cudaStream_t> streams;  // that its transfers were held on
  std::atomic<ncclResult_t> async_error{ncclSuccess};
};

namespace moefold::nccl_emulation {
namespace {

constexpr int kMessageTag = 0, kConnectTag = 1;           // on a communicator's MPI communicator
constexpr int kBootstrapTag = 24000, kBootstraps = 4096;  // on MPI_COMM_WORLD

// What ncclGetUniqueId writes: the world rank that made it, which the communicator's ranks
// meet at (it must be one of them, as in every use here), and its count of ids made.
struct IdContents {
  char magic[24];
  int creator;
  int serial;
};
constexpr char kMagic[] = "moefold emulated NCCL";
static_assert(sizeof(IdContents) <= NCCL_UNIQUE_ID_BYTES);

// What each rank tells the others when a communicator is made.
struct Member {
  int rank;
  int world_rank;
  uint64_t host;
  int device;
};

ncclResult_t refuse(ncclResult_t result, const char* format, ...) {
  std::va_list args;
  va_start(args, format);
  std::fprintf(stderr, "emulated NCCL WARN ");
  std::vfprintf(stderr, format, args);
  std::fprintf(stderr, "\n");
  va_end(args);
  return result;
}

thread_local int group_depth = 0;

// The communicators alive in this process, for report_async_error.
struct Alive {
  std::mutex mutex;
  std::set<ncclComm*> comms;
};
Alive& alive() {
  static Alive a;
  return a;
}

size_t element_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
  }
  return 0;
}

template <class Acc>
Acc combine(ncclRedOp_t op, Acc a, Acc b) {
  switch (op) {
    case ncclSum:
    case ncclAvg: return a + b;
    case ncclProd: return a * b;
    case ncclMax: return a > b ? a : b;
    case ncclMin: return a < b ? a : b;
  }
  return a;
}

// out[i] = op over the `n` chunks (each `count` elements of T, one per rank, in rank order).
template <class T, class Acc, class Load, class Store>
void reduce_as(const char* chunks, int n, size_t count, ncclRedOp_t op, void* out, Load load,
               Store store) {
  const T* in = reinterpret_cast<const T*>(chunks);
  for (size_t i = 0; i < count; ++i) {
    Acc acc = load(in[i]);
    for (int c = 1; c < n; ++c) acc = combine(op, acc, Acc(load(in[c * count + i])));
    if (op == ncclAvg) acc = acc / Acc(n);
    static_cast<T*>(out)[i] = store(acc);
  }
}

template <class T, class Acc>
void reduce_plain(const char* chunks, int n, size_t count, ncclRedOp_t op, void* out) {
  reduce_as<T, Acc>(
      chunks, n, count, op, out, [](T v) { return Acc(v); }, [](Acc v) { return T(v); });
}

void reduce(ncclDataType_t type, ncclRedOp_t op, const char* chunks, int n, size_t count,
            void* out) {
  switch (type) {
    case ncclInt8: return reduce_plain<int8_t, int64_t>(chunks, n, count, op, out);
    case ncclUint8: return reduce_plain<uint8_t, uint64_t>(chunks, n, count, op, out);
    case ncclInt32: return reduce_plain<int32_t, int64_t>(chunks, n, count, op, out);
    case ncclUint32: return reduce_plain<uint32_t, uint64_t>(chunks, n, count, op, out);
    case ncclInt64: return reduce_plain<int64_t, int64_t>(chunks, n, count, op, out);
    case ncclUint64: return reduce_plain<uint64_t, uint64_t>(chunks, n, count, op, out);
    case ncclFloat32: return reduce_plain<float, float>(chunks, n, count, op, out);
    case ncclFloat64: return reduce_plain<double, double>(chunks, n, count, op, out);
    case ncclBfloat16:
      return reduce_as<uint16_t, float>(chunks, n, count, op, out, bf16_bits_to_float,
                                        float_to_bf16_bits);
    case ncclFloat16: break;  // refused when issued
  }
}

// A buffer of a call: refused unless it is memory of the communicator's device.
struct Buffer {
  const char* name;
  const void* ptr;
  size_t bytes;
};

bool on_device(const ncclComm& comm, const Buffer& buffer) {
  return buffer.bytes == 0 ||
         cuda_emulation::memory().device_of(buffer.ptr, buffer.bytes) == comm.device;
}

// One call's MPI operations, posted when its stream reaches it, and what to do once they are
// done (reduce what was gathered).
struct Call {
  const char* name;
  ncclComm* comm;
  std::vector<Buffer> buffers;
  std::function<void(std::vector<MPI_Request>&)> post;
  std::function<void()> finish = nullptr;
};

// The calls of one stream from one ncclGroupStart/End (or one call outside a group): posted
// together, done together.
class Transfer final : public cuda_emulation::StreamWork {
 public:
  void add(Call call) { calls_.push_back(std::move(call)); }

  bool progress(bool block) override {
    if (!started_) {
      started_ = true;
      for (Call& call : calls_) {
        // A buffer freed while the transfer waited on its stream is memory a GPU would have
        // reused by now: the bug this catches is a free not ordered after the transfer.
        for (const Buffer& buffer : call.buffers) {
          if (!on_device(*call.comm, buffer)) {
            refuse(ncclInvalidUsage, "%s: %s %p was freed before the transfer ran", call.name,
                   buffer.name, buffer.ptr);
            std::abort();
          }
        }
        call.post(requests_);
      }
    }
    int done = 0;
    if (block) {
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
      done = 1;
    } else {
      MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE);
    }
    if (!done) return false;
    for (Call& call : calls_) {
      if (call.finish) call.finish();
    }
    return true;
  }

 private:
  std::vector<Call> calls_;
  std::vector<MPI_Request> requests_;
  bool started_ = false;
};

struct Grouped {
  Call call;
  cudaStream_t stream;
  int peer;  // of a point-to-point call, else -1
};
thread_local std::vector<Grouped> grouped;

// NCCL connects two ranks on their first point-to-point message (at a group's end, for the
// group's), waiting there until the peer connects too.
void connect(ncclComm& comm, const std::set<int>& peers) {
  std::vector<int> fresh;
  {
    std::lock_guard<std::mutex> lock(comm.mutex);
    for (int peer : peers) {
      if (!comm.connected.contains(peer)) fresh.push_back(peer);
    }
  }
  std::vector<MPI_Request> requests(2 * fresh.size());
  for (size_t i = 0; i < fresh.size(); ++i) {
    MPI_Isend(nullptr, 0, MPI_BYTE, fresh[i], kConnectTag, comm.mpi, &requests[2 * i]);
    MPI_Irecv(nullptr, 0, MPI_BYTE, fresh[i], kConnectTag, comm.mpi, &requests[2 * i + 1]);
  }
  MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
  std::lock_guard<std::mutex> lock(comm.mutex);
  comm.connected.insert(fresh.begin(), fresh.end());
}

void hold(cudaStream_t stream, std::vector<Call> calls) {
  auto transfer = std::make_unique<Transfer>();
  for (Call& call : calls) {
    {
      std::lock_guard<std::mutex> lock(call.comm->mutex);
      call.comm->streams.insert(stream);
    }
    transfer->add(std::move(call));
  }
  cuda_emulation::hold(stream, std::move(transfer));
}

// Checks a call and holds it on its stream, or keeps it for the group's end.
ncclResult_t issue(Call call, cudaStream_t stream, int peer = -1) {
  for (const Buffer& buffer : call.buffers) {
    if (buffer.bytes > static_cast<size_t>(std::numeric_limits<int>::max())) {
      return refuse(ncclInvalidArgument, "%s: %s of %zu bytes is beyond the emulation's 2 GiB",
                    call.name, buffer.name, buffer.bytes);
    }
    if (!on_device(*call.comm, buffer)) {
      return refuse(ncclInvalidArgument, "%s: %s %p is not memory of cuda:%d, the communicator's",
                    call.name, buffer.name, buffer.ptr, call.comm->device);
    }
  }
  if (group_depth > 0) {
    grouped.push_back({std::move(call), stream, peer});
    return ncclSuccess;
  }
  if (peer >= 0) connect(*call.comm, {peer});
  std::vector<Call> calls;
  calls.push_back(std::move(call));
  hold(stream, std::move(calls));
  return ncclSuccess;
}

bool valid_op(ncclRedOp_t op, ncclDataType_t type) {
  const bool floating = type == ncclFloat32 || type == ncclFloat64 || type == ncclBfloat16;
  return op == ncclSum || op == ncclProd || op == ncclMax || op == ncclMin ||
         (op == ncclAvg && floating);
}

uint64_t host_identity() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return std::hash<std::string>{}(name);
}

constexpr ncclRedOp_t kNoOp = ncclSum;  // of calls that reduce nothing
constexpr int kNoRank = 0;              // of calls without a root or peer

// Why a call's communicator, reduction, root or peer is refused, or ncclSuccess.
ncclResult_t check(const char* name, ncclComm* comm, ncclDataType_t type, ncclRedOp_t op,
                   int root_or_peer) {
  if (comm == nullptr) return refuse(ncclInvalidArgument, "%s: null communicator", name);
  if (element_bytes(type) == 0 || type == ncclFloat16) {
    return refuse(ncclInvalidArgument, "%s: datatype %d is not emulated", name, type);
  }
  if (!valid_op(op, type)) {
    return refuse(ncclInvalidArgument, "%s: reduction %d on datatype %d", name, op, type);
  }
  if (root_or_peer < 0 || root_or_peer >= comm->size) {
    return refuse(ncclInvalidArgument, "%s: rank %d of %d", name, root_or_peer, comm->size);
  }
  return ncclSuccess;
}

ncclResult_t point_to_point(bool sending, void* buffer, size_t count, ncclDataType_t datatype,
                            int peer, ncclComm* comm, cudaStream_t stream) {
  const char* name = sending ? "ncclSend" : "ncclRecv";
  if (ncclResult_t bad = check(name, comm, datatype, kNoOp, peer)) return bad;
  const size_t bytes = count * element_bytes(datatype);
  const MPI_Comm mpi = comm->mpi;
  return issue({name,
                comm,
                {{sending ? "sendbuff" : "recvbuff", buffer, bytes}},
                [=](std::vector<MPI_Request>& requests) {
                  if (sending) {
                    MPI_Isend(buffer, int(bytes), MPI_BYTE, peer, kMessageTag, mpi,
                              &requests.emplace_back());
                  } else {
                    MPI_Irecv(buffer, int(bytes), MPI_BYTE, peer, kMessageTag, mpi,
                              &requests.emplace_back());
                  }
                }},
               stream, peer);
}

// The `count` elements each rank gives, gathered in rank order where they are reduced.
std::shared_ptr<std::vector<char>> chunks(size_t bytes, int ranks) {
  return std::make_shared<std::vector<char>>(bytes * ranks);
}

}  // namespace
}  // namespace moefold::nccl_emulation

using namespace moefold::nccl_emulation;

void moefold::nccl_emulation::report_async_error(ncclResult_t error) {
  std::lock_guard<std::mutex> lock(alive().mutex);
  for (ncclComm* comm : alive().comms) comm->async_error = error;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  static std::atomic<int> made{0};
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return refuse(ncclSystemError, "ncclGetUniqueId: MPI is not initialised");
  IdContents contents = {};
  std::memcpy(contents.magic, kMagic, sizeof(kMagic));
  MPI_Comm_rank(MPI_COMM_WORLD, &contents.creator);
  contents.serial = made++;
  *unique_id = {};
  std::memcpy(unique_id->internal, &contents, sizeof(contents));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank) {
  int initialized = 0, level = MPI_THREAD_SINGLE;
  MPI_Initialized(&initialized);
  if (!initialized) return refuse(ncclSystemError, "ncclCommInitRank: MPI is not initialised");
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) {
    return refuse(ncclSystemError, "ncclCommInitRank: MPI must run with MPI_THREAD_MULTIPLE");
  }
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    return refuse(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
  }
  IdContents id;
  std::memcpy(&id, comm_id.internal, sizeof(id));
  if (std::memcmp(id.magic, kMagic, sizeof(kMagic)) != 0) {
    return refuse(ncclInvalidArgument, "ncclCommInitRank: the id is not from ncclGetUniqueId");
  }
  Member me = {rank, 0, host_identity(), 0};
  MPI_Comm_rank(MPI_COMM_WORLD, &me.world_rank);
  cudaGetDevice(&me.device);
  const int tag = kBootstrapTag + id.serial % kBootstraps;
  std::vector<Member> members(nranks);
  if (me.world_rank == id.creator) {
    members[rank] = me;
    for (int joined = 1; joined < nranks; ++joined) {
      Member other;
      MPI_Recv(&other, sizeof(other), MPI_BYTE, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      members[other.rank] = other;
    }
    for (const Member& m : members) {
      if (m.world_rank == me.world_rank) continue;
      MPI_Send(members.data(), static_cast<int>(sizeof(Member) * nranks), MPI_BYTE, m.world_rank,
               tag, MPI_COMM_WORLD);
    }
  } else {
    MPI_Send(&me, sizeof(me), MPI_BYTE, id.creator, tag, MPI_COMM_WORLD);
    MPI_Recv(members.data(), static_cast<int>(sizeof(Member) * nranks), MPI_BYTE, id.creator, tag,
             MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  for (int a = 0; a < nranks; ++a) {
    for (int b = 0; b < a; ++b) {
      if (members[a].host == members[b].host && members[a].device == members[b].device) {
        return refuse(ncclInvalidUsage,
                      "Duplicate GPU detected: rank %d and rank %d both on cuda:%d", a, b,
                      members[a].device);
      }
    }
  }
  std::vector<int> world_ranks;
  for (const Member& m : members) world_ranks.push_back(m.world_rank);
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  MPI_Group_incl(world_group, nranks, world_ranks.data(), &group);
  auto made = std::make_unique<ncclComm>();
  MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &made->mpi);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  made->rank = rank;
  made->size = nranks;
  made->device = me.device;
  *comm = made.release();
  std::lock_guard<std::mutex> lock(alive().mutex);
  alive().comms.insert(*comm);
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  for (cudaStream_t stream : comm->streams) {  // NCCL finishes the communicator's work first
    moefold::cuda_emulation::settle(stream);
  }
  {
    std::lock_guard<std::mutex> lock(alive().mutex);
    alive().comms.erase(comm);
  }
  MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (comm == nullptr) return ncclInvalidArgument;
  *async_error = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (group_depth == 0) return refuse(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--group_depth > 0) return ncclSuccess;
  std::vector<Grouped> calls = std::move(grouped);
  grouped.clear();
  // Connect each communicator's new peers, then hold each stream's calls as one transfer.
  // Communicators in call order, which every rank shares (not pointer order, which differs):
  // each connection waits for its peers.
  std::vector<std::pair<ncclComm*, std::set<int>>> peers;
  for (const Grouped& g : calls) {
    if (g.peer < 0) continue;
    auto it =
        std::find_if(peers.begin(), peers.end(), [&](auto& p) { return p.first == g.call.comm; });
    if (it == peers.end()) it = peers.insert(peers.end(), {g.call.comm, {}});
    it->second.insert(g.peer);
  }
  for (auto& [comm, with] : peers) connect(*comm, with);
  std::vector<std::pair<cudaStream_t, std::vector<Call>>> by_stream;
  for (Grouped& g : calls) {
    auto it = std::find_if(by_stream.begin(), by_stream.end(),
                           [&](auto& s) { return s.first == g.stream; });
    if (it == by_stream.end()) it = by_stream.insert(by_stream.end(), {g.stream, {}});
    it->second.push_back(std::move(g.call));
  }
  for (auto& [stream, stream_calls] : by_stream) hold(stream, std::move(stream_calls));
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  if (ncclResult_t bad = check("ncclAllReduce", comm, datatype, op, kNoRank)) return bad;
  const size_t bytes = count * element_bytes(datatype);
  const auto gathered = chunks(bytes, comm->size);
  const MPI_Comm mpi = comm->mpi;
  const int ranks = comm->size;
  return issue({"ncclAllReduce",
                comm,
                {{"sendbuff", sendbuff, bytes}, {"recvbuff", recvbuff, bytes}},
                [=](std::vector<MPI_Request>& requests) {
                  MPI_Iallgather(sendbuff, int(bytes), MPI_BYTE, gathered->data(), int(bytes),
                                 MPI_BYTE, mpi, &requests.emplace_back());
                },
                [=] { reduce(datatype, op, gathered->data(), ranks, count, recvbuff); }},
               stream);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  if (ncclResult_t bad = check("ncclAllGather", comm, datatype, kNoOp, kNoRank)) return bad;
  const size_t bytes = sendcount * element_bytes(datatype);
  const MPI_Comm mpi = comm->mpi;
  const bool in_place = sendbuff == static_cast<char*>(recvbuff) + bytes * comm->rank;
  return issue({"ncclAllGather",
                comm,
                {{"sendbuff", sendbuff, bytes}, {"recvbuff", recvbuff, bytes * comm->size}},
                [=](std::vector<MPI_Request>& requests) {
                  MPI_Iallgather(in_place ? MPI_IN_PLACE : sendbuff, int(bytes), MPI_BYTE, recvbuff,
                                 int(bytes), MPI_BYTE, mpi, &requests.emplace_back());
                }},
               stream);
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  if (ncclResult_t bad = check("ncclReduceScatter", comm, datatype, op, kNoRank)) return bad;
  const size_t bytes = recvcount * element_bytes(datatype);
  const auto gathered = chunks(bytes, comm->size);
  const MPI_Comm mpi = comm->mpi;
  const int ranks = comm->size;
  return issue({"ncclReduceScatter",
                comm,
                {{"sendbuff", sendbuff, bytes * comm->size}, {"recvbuff", recvbuff, bytes}},
                [=](std::vector<MPI_Request>& requests) {
                  MPI_Ialltoall(sendbuff, int(bytes), MPI_BYTE, gathered->data(), int(bytes),
                                MPI_BYTE, mpi, &requests.emplace_back());
                },
                [=] { reduce(datatype, op, gathered->data(), ranks, recvcount, recvbuff); }},
               stream);
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  if (ncclResult_t bad = check("ncclBroadcast", comm, datatype, kNoOp, root)) return bad;
  const size_t bytes = count * element_bytes(datatype);
  const MPI_Comm mpi = comm->mpi;
  const bool is_root = comm->rank == root;
  std::vector<Buffer> buffers = {{"recvbuff", recvbuff, bytes}};
  if (is_root) buffers.push_back({"sendbuff", sendbuff, bytes});
  return issue({"ncclBroadcast", comm, std::move(buffers),
                [=](std::vector<MPI_Request>& requests) {
                  if (is_root && sendbuff != recvbuff) std::memmove(recvbuff, sendbuff, bytes);
                  MPI_Ibcast(recvbuff, int(bytes), MPI_BYTE, root, mpi, &requests.emplace_back());
                }},
               stream);
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  if (ncclResult_t bad = check("ncclReduce", comm, datatype, op, root)) return bad;
  const size_t bytes = count * element_bytes(datatype);
  const bool is_root = comm->rank == root;
  const auto gathered = chunks(is_root ? bytes : 0, comm->size);
  const MPI_Comm mpi = comm->mpi;
  const int ranks = comm->size;
  std::vector<Buffer> buffers = {{"sendbuff", sendbuff, bytes}};
  if (is_root) buffers.push_back({"recvbuff", recvbuff, bytes});
  return issue({"ncclReduce", comm, std::move(buffers),
                [=](std::vector<MPI_Request>& requests) {
                  MPI_Igather(sendbuff, int(bytes), MPI_BYTE, gathered->data(), int(bytes),
                              MPI_BYTE, root, mpi, &requests.emplace_back());
                },
                [=] {
                  if (is_root) reduce(datatype, op, gathered->data(), ranks, count, recvbuff);
                }},
               stream);
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return point_to_point(true, const_cast<void*>(sendbuff), count, datatype, peer, comm, stream);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
  return point_to_point(false, recvbuff, count, datatype, peer, comm, stream);
}
