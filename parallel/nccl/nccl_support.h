// What the NCCL communicator and its point-to-point lanes share: checked CUDA and NCCL calls
// (errors name the call, file, line and device), the wire types, and a communication stream
// ordered after the compute stream whose work completes async handles.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/communicator.h"

namespace moefold::nccl_support {

[[noreturn]] void fail_call(const char* call, const char* file, int line, const char* error);

ncclDataType_t nccl_type(CommDType dtype);

// A communication stream of one NCCL communicator. Work is issued on it one thread at a time,
// after everything issued on the compute stream so far (the buffers compute writes, or still
// reads). Each issue's handle completes, in issue order, once an event recorded after it fires:
// a thread sleeps on the event (blocking sync, so no core spins), then reports the CUDA error
// or the communicator's asynchronous NCCL error, if any. An asynchronous error that leaves the
// transfers waiting forever (a peer gone, a broken link) ends the job through the watchdog,
// whose probe names the communicator (`name`: "group dp [0,2]") and the device.
class NcclStream {
 public:
  NcclStream(ncclComm_t comm, cudaStream_t compute, std::string name);
  ~NcclStream();  // once every handle completed
  NcclStream(const NcclStream&) = delete;
  NcclStream& operator=(const NcclStream&) = delete;

  cudaStream_t get() const { return stream_; }
  // Runs `issue` (NCCL calls on get()) and returns a handle of make_state()'s state, which
  // completes when they are done.
  template <class Issue, class MakeState>
  WorkHandle run(Issue issue, MakeState make_state) {
    std::lock_guard<std::mutex> issuing(issue_mutex_);
    order_after_compute();
    issue();
    return track(make_state());
  }

 private:
  struct Pending {
    cudaEvent_t done;
    std::shared_ptr<WorkState> state;
  };
  void order_after_compute();
  WorkHandle track(std::shared_ptr<WorkState> state);  // an event after the work just issued
  void complete_in_order();                            // the thread

  ncclComm_t comm_;
  cudaStream_t compute_;
  uint64_t probe_;  // the watchdog's
  cudaStream_t stream_ = nullptr;
  std::mutex issue_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Pending> pending_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace moefold::nccl_support

#define MOEFOLD_NCCL_CHECK(call)                                            \
  do {                                                                      \
    const ncclResult_t nccl_result_ = (call);                               \
    if (nccl_result_ != ncclSuccess) {                                      \
      ::moefold::nccl_support::fail_call(#call, __FILE__, __LINE__,         \
                                         ncclGetErrorString(nccl_result_)); \
    }                                                                       \
  } while (0)
#define MOEFOLD_NCCL_CUDA_CHECK(call)                                       \
  do {                                                                      \
    const cudaError_t cuda_result_ = (call);                                \
    if (cuda_result_ != cudaSuccess) {                                      \
      ::moefold::nccl_support::fail_call(#call, __FILE__, __LINE__,         \
                                         cudaGetErrorString(cuda_result_)); \
    }                                                                       \
  } while (0)
