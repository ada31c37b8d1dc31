// Work that an emulated stream holds back, for what the emulated runtime cannot do at once: the
// emulated NCCL's transfers (tests/parallel/nccl_emulation), which need their peers. Everything
// else on a stream still runs at once, in the issuing thread, but only after the stream's held
// work is done, so the stream keeps its order. Held work runs in stream order, each piece after
// what it followed (the work before it on its stream and the events its stream waited on), and
// only when something waits for it: a stream synchronisation, an event, or later work on it. So a
// transfer waits on its stream as on a GPU, where it holds the stream until its peers arrive.
#pragma once

#include <cuda_runtime.h>

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

// The runtime's side: what a stream or event waits for, and runs it.
void settle(cudaStream_t stream);  // every work the stream holds, done
void record(cudaEvent_t event, cudaStream_t stream);
void wait(cudaStream_t stream, cudaEvent_t event);
void synchronize(cudaEvent_t event);
bool query(cudaEvent_t event);  // progresses the event's work without waiting; true when done
void forget(cudaEvent_t event);
void settle_all();  // every stream's

}  // namespace moefold::cuda_emulation
