// Context-parallel communication (STYLE.md 6), forward and backward paired, over the CP
// communicator:
//
//   forward                          backward
//   KvRing::pass (K/V to next)    ↔  KvRing::pass_gradient (dK/dV towards the block's owner)
//
// The ring: CP rank r sends to r+1 and receives from r−1 (mod CP). At step s of a ring pass
// rank r holds the block of rank (r − s) mod CP. Transfers are posted async (the communication
// thread of the backend moves them) so the next block travels while the current one computes.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace moefold {

// Running totals of this process's CP ring, for the overlap benchmark. A counter only.
struct CpCommunicationStats {
  double wait_seconds = 0;     // compute thread blocked on ring transfers
  double compute_seconds = 0;  // ring attention's block computations
  int64_t bytes_sent = 0;
};
CpCommunicationStats& cp_communication_stats();

class KvRing {
 public:
  // overlap false completes each exchange before returning (the benchmark's baseline): a pass
  // in start_pass, a gradient receive with the send posted after it in send_gradient.
  KvRing(Communicator& cp, bool overlap = true);

  int size() const { return cp_.size(); }
  int next() const { return (cp_.rank() + 1) % cp_.size(); }
  int prev() const { return (cp_.rank() + cp_.size() - 1) % cp_.size(); }
  // The CP rank whose block this rank holds at ring step `step`.
  int source(int step) const { return (cp_.rank() - step % size() + size()) % size(); }

  // Forward: posts the send of `block` (count elements of dtype: the activations') to next and
  // the receive of prev's block into `incoming`; neither may be touched until finish_pass.
  void start_pass(const void* block, void* incoming, int64_t count, CommDType dtype);
  void finish_pass();

  // Backward, the dK/dV ring: a block's gradient travels with it and, after the last step, one
  // more hop brings it home. start_gradient_receive posts the receive of prev's partial sum into
  // `incoming`; finish_gradient_receive waits for it. send_gradient posts the send of `partial`
  // to next (it must stay untouched until finish_gradient_sends). Post the receive first.
  void start_gradient_receive(float* incoming, int64_t count);
  void finish_gradient_receive();
  void send_gradient(const float* partial, int64_t count);
  void finish_gradient_sends();

 private:
  void wait(WorkHandle& handle);
  Communicator& cp_;
  bool overlap_;
  WorkHandle send_, recv_, grad_recv_;
  std::vector<WorkHandle> grad_sends_;
};

}  // namespace moefold
