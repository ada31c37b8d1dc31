// Work that an emulated stream holds back: every kernel, copy, memset, cuBLAS call and
// stream-ordered free, and the emulated NCCL's transfers (tests/parallel/nccl_emulation), which
// need their peers. Held work runs in stream order, each piece after what it followed (the work
// before it on its stream and the events its stream waited on), and only when something waits
// for it: a stream or device synchronisation, an event's synchronisation or query, or a copy
// into pageable memory, in whichever thread waits. So the host runs ahead of the emulated device
// as it runs ahead of a GPU: host memory that an issued copy or kernel reads, rewritten before
// the host waited for it, shows as wrong data, and a result read before the wait shows as
// missing; a transfer holds its stream until its peers arrive.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <memory>

namespace moefold::cuda_emulation {

class StreamWork {
 public:
  virtual ~StreamWork() = default;
  // Starts the work the first time; then true once it is done. `block`: waits until it is.
  virtual bool progress(bool block) = 0;
};

// Holds `work` on `stream`, behind everything the stream holds now.
void hold(cudaStream_t stream, std::unique_ptr<StreamWork> work);
// Holds work that needs no peer and runs in one go (a kernel, a copy).
void enqueue(cudaStream_t stream, std::function<void()> work);

// The runtime's side: what a stream or event waits for, and runs it.
void settle(cudaStream_t stream);  // every work the stream holds, done
void record(cudaEvent_t event, cudaStream_t stream);
void wait(cudaStream_t stream, cudaEvent_t event);
void synchronize(cudaEvent_t event);
bool query(cudaEvent_t event);  // progresses the event's work without waiting; true when done
void forget(cudaEvent_t event);
void settle_all();  // every stream's

}  // namespace moefold::cuda_emulation
