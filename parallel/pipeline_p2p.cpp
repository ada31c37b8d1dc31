#include "parallel/pipeline_p2p.h"

#include "tensor/check.h"

namespace moefold {
namespace {

void check_transfer(const PipelineAction& action, PipelineActionType expected,
                    const Communicator& pp) {
  MOEFOLD_CHECK(action.type == expected, describe(action) << " is not a "
                                                          << pipeline_action_type_name(expected));
  MOEFOLD_CHECK(action.peer >= 0 && action.peer < pp.size() && action.tag >= 0,
                describe(action) << " on a pipeline group of " << pp.size());
}

WorkHandle post_send(Communicator& pp, const PipelineAction& action, PipelineActionType type,
                     const Tensor& t) {
  check_transfer(action, type, pp);
  return pp.send_async(t.raw_data(), t.numel(), comm_dtype_of(t.dtype()), action.peer,
                       action.tag);
}

WorkHandle post_recv(Communicator& pp, const PipelineAction& action, PipelineActionType type,
                     Tensor& t) {
  check_transfer(action, type, pp);
  return pp.recv_async(t.raw_data(), t.numel(), comm_dtype_of(t.dtype()), action.peer,
                       action.tag);
}

}  // namespace

WorkHandle send_forward(Communicator& pp, const PipelineAction& action,
                        const Tensor& activation_NH) {
  return post_send(pp, action, PipelineActionType::kSendForward, activation_NH);
}

WorkHandle recv_forward(Communicator& pp, const PipelineAction& action, Tensor& activation_NH) {
  return post_recv(pp, action, PipelineActionType::kRecvForward, activation_NH);
}

WorkHandle send_backward(Communicator& pp, const PipelineAction& action, const Tensor& grad_NH) {
  return post_send(pp, action, PipelineActionType::kSendBackward, grad_NH);
}

WorkHandle recv_backward(Communicator& pp, const PipelineAction& action, Tensor& grad_NH) {
  return post_recv(pp, action, PipelineActionType::kRecvBackward, grad_NH);
}

void PipelineTransfers::post(const PipelineAction& action, const Tensor& buffer) {
  Tensor held = buffer;  // shares the storage
  switch (action.type) {
    case PipelineActionType::kSendForward:
      sends_.push_back({send_forward(pp_, action, held), held});
      return;
    case PipelineActionType::kSendBackward:
      sends_.push_back({send_backward(pp_, action, held), held});
      return;
    case PipelineActionType::kRecvForward:
    case PipelineActionType::kRecvBackward: {
      const bool gradient = action.type == PipelineActionType::kRecvBackward;
      const Key key{gradient, action.micro_batch, action.chunk};
      MOEFOLD_CHECK(!receives_.count(key), describe(action) << " posted twice");
      WorkHandle handle = gradient ? recv_backward(pp_, action, held)
                                   : recv_forward(pp_, action, held);
      receives_.emplace(key, InFlight{std::move(handle), held});
      return;
    }
    case PipelineActionType::kForward:
    case PipelineActionType::kBackward:
    case PipelineActionType::kWeight:
      break;
  }
  MOEFOLD_CHECK(false, describe(action) << " is a computation, not a transfer");
}

bool PipelineTransfers::wait_input(const PipelineAction& compute) {
  MOEFOLD_CHECK(compute.is_compute(), describe(compute) << " is not a computation");
  const bool gradient = compute.type == PipelineActionType::kBackward;
  const auto it = receives_.find(Key{gradient, compute.micro_batch, compute.chunk});
  if (it == receives_.end()) return false;
  it->second.handle.wait();
  receives_.erase(it);
  return true;
}

void PipelineTransfers::wait_sends() {
  for (InFlight& send : sends_) send.handle.wait();
  sends_.clear();
}

}  // namespace moefold
