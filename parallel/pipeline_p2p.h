// Pipeline point-to-point communication (STYLE.md 6), over ParallelContext::pp, each forward
// transfer named together with its backward:
//
//   send_forward   ↔  recv_forward    activation (N,H) of a micro-batch, virtual stage v → v+1
//   send_backward  ↔  recv_backward   d loss / d that activation (N,H), v+1 → v
//
// The peer and tag come from the schedule's action (pipeline_schedule.h), so the four calls are
// all an executor needs to run an action list. Everything is posted asynchronously and returns a
// WorkHandle; the tensor must stay alive and untouched until the handle is done. The receive for
// the next computation is posted before the current one runs, so the transfer overlaps it.
#pragma once

#include <map>
#include <tuple>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"
#include "tensor/tensor.h"

namespace moefold {

// activation_NH: the output of (micro_batch, chunk) to the next virtual stage ↔ the input of
// (micro_batch, chunk) from the previous one. Sizes must agree on both ends.
WorkHandle send_forward(Communicator& pp, const PipelineAction& action,
                        const Tensor& activation_NH);
WorkHandle recv_forward(Communicator& pp, const PipelineAction& action, Tensor& activation_NH);

// grad_NH: d loss / d the input of (micro_batch, chunk) to the previous virtual stage ↔
// d loss / d the output of (micro_batch, chunk) from the next one.
WorkHandle send_backward(Communicator& pp, const PipelineAction& action, const Tensor& grad_NH);
WorkHandle recv_backward(Communicator& pp, const PipelineAction& action, Tensor& grad_NH);

// The transfers of one step while they are in flight: receives until the computation they feed
// waits for them, sends until the end of the step. Holds a reference to every buffer (tensors
// share storage), so a buffer outlives its transfer even if the caller drops it. A step ends
// idle(): every receive consumed by its computation, then wait_sends().
class PipelineTransfers {
 public:
  explicit PipelineTransfers(Communicator& pp) : pp_(pp) {}
  PipelineTransfers(const PipelineTransfers&) = delete;
  PipelineTransfers& operator=(const PipelineTransfers&) = delete;

  // Posts a send or receive action on `buffer` (the activation or gradient it carries).
  void post(const PipelineAction& action, const Tensor& buffer);
  // Waits for the receive posted for computation `compute` (kForward: its input activation,
  // kBackward: its output gradient) and returns true; false when none was posted (the first
  // virtual stage's forward, the last one's backward).
  bool wait_input(const PipelineAction& compute);
  void wait_sends();  // every send posted so far; the end of a step
  bool idle() const { return receives_.empty() && sends_.empty(); }

 private:
  using Key = std::tuple<bool, int, int>;  // (gradient, micro_batch, chunk)
  struct InFlight {
    WorkHandle handle;
    Tensor buffer;
  };

  Communicator& pp_;
  std::map<Key, InFlight> receives_;
  std::vector<InFlight> sends_;
};

}  // namespace moefold
