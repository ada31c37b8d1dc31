#include "parallel/nccl/nccl_support.h"

#include <string>

#include "absl/strings/str_format.h"
#include "parallel/watchdog.h"
#include "tensor/check.h"

namespace moefold::nccl_support {

void fail_call(const char* call, const char* file, int line, const char* error) {
  int device = -1;
  cudaGetDevice(&device);
  throw InternalError(
      absl::StrFormat("%s:%d: %s failed on cuda:%d: %s", file, line, call, device, error));
}

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

NcclStream::NcclStream(ncclComm_t comm, cudaStream_t compute, std::string name)
    : comm_(comm), compute_(compute) {
  int device = 0;
  MOEFOLD_NCCL_CUDA_CHECK(cudaGetDevice(&device));
  MOEFOLD_NCCL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  thread_ = std::thread([this, device] {
    cudaSetDevice(device);
    complete_in_order();
  });
  // Last, so that a constructor that throws leaves no probe behind.
  probe_ =
      watchdog::add_probe([comm, device, name = std::move(name)]() -> std::optional<std::string> {
        ncclResult_t error = ncclSuccess;
        if (ncclCommGetAsyncError(comm, &error) != ncclSuccess || error == ncclSuccess ||
            error == ncclInProgress) {
          return std::nullopt;
        }
        return absl::StrFormat("NCCL reported an asynchronous error on %s (cuda:%d): %s", name,
                               device, ncclGetErrorString(error));
      });
}

NcclStream::~NcclStream() {
  watchdog::remove_probe(probe_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  cudaStreamDestroy(stream_);
}

void NcclStream::order_after_compute() {
  cudaEvent_t ready = nullptr;
  MOEFOLD_NCCL_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  MOEFOLD_NCCL_CUDA_CHECK(cudaEventRecord(ready, compute_));
  MOEFOLD_NCCL_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
  MOEFOLD_NCCL_CUDA_CHECK(cudaEventDestroy(ready));  // the wait is enqueued; the event may go
}

WorkHandle NcclStream::track(std::shared_ptr<WorkState> state) {
  cudaEvent_t done = nullptr;
  MOEFOLD_NCCL_CUDA_CHECK(
      cudaEventCreateWithFlags(&done, cudaEventDisableTiming | cudaEventBlockingSync));
  MOEFOLD_NCCL_CUDA_CHECK(cudaEventRecord(done, stream_));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back({done, state});
  }
  cv_.notify_one();
  return WorkHandle(std::move(state));
}

void NcclStream::complete_in_order() {
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

}  // namespace moefold::nccl_support
