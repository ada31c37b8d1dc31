// What the NCCL communicator and its point-to-point lanes share: checked CUDA and NCCL calls
// (errors name the call, file, line and device), the wire types, the ordering of a
// communication stream after the compute stream, and the completion of work issued on a
// stream.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "parallel/communicator.h"

namespace moefold::nccl_support {

[[noreturn]] void fail_call(const char* call, const char* file, int line, const char* error);

ncclDataType_t nccl_type(CommDType dtype);

// The communication stream `stream` waits for everything issued on `compute` so far (the
// buffers compute writes, or still reads).
void order_after(cudaStream_t stream, cudaStream_t compute);

// Completes the handles of work issued on one stream, in issue order, as the events recorded
// after it fire: a thread sleeps on each event (blocking sync, so no core spins), then reports
// the CUDA error or NCCL's asynchronous error of `comm`, if any.
class StreamCompletions {
 public:
  StreamCompletions(ncclComm_t comm, int device);
  ~StreamCompletions();  // returns once every tracked handle completed
  StreamCompletions(const StreamCompletions&) = delete;
  StreamCompletions& operator=(const StreamCompletions&) = delete;

  // Records an event on `stream` after the work just issued; `state` completes when it fires.
  WorkHandle track(cudaStream_t stream, std::shared_ptr<WorkState> state);

 private:
  struct Pending {
    cudaEvent_t done;
    std::shared_ptr<WorkState> state;
  };
  void complete_in_order();  // the thread

  ncclComm_t comm_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moefold::nccl_support

#define MOEFOLD_NCCL_CHECK(call)                                                            \
  do {                                                                                      \
    const ncclResult_t nccl_result_ = (call);                                               \
    if (nccl_result_ != ncclSuccess) {                                                      \
      ::moefold::nccl_support::fail_call(#call, __FILE__, __LINE__,                         \
                                         ncclGetErrorString(nccl_result_));                 \
    }                                                                                       \
  } while (0)
#define MOEFOLD_NCCL_CUDA_CHECK(call)                                                       \
  do {                                                                                      \
    const cudaError_t cuda_result_ = (call);                                                \
    if (cuda_result_ != cudaSuccess) {                                                      \
      ::moefold::nccl_support::fail_call(#call, __FILE__, __LINE__,                         \
                                         cudaGetErrorString(cuda_result_));                 \
    }                                                                                       \
  } while (0)
