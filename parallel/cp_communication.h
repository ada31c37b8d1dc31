// Context-parallel communication (STYLE.md 6), forward and backward paired, over the CP
// communicator (or, for the sequence gathers, the group whose rank order concatenates the
// sequence shards: CP, or TP×CP under sequence parallelism).
//
//   forward                          backward
//   KvRing::pass (K/V to next)    ↔  KvRing::pass_gradient (dK/dV towards the block's owner)
//   gather_context_sequence       ↔  split (own rows of the gradient)
//   split_context_sequence        ↔  all-gather
//
// The ring: CP rank r sends to r+1 and receives from r−1 (mod CP). At step s of a ring pass
// rank r holds the block of rank (r − s) mod CP. Transfers are posted async (the communication
// thread of the backend moves them) so the next block travels while the current one computes.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

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

// all-gather ↔ split along the sequence. Rank g of `group` holds rows [g·n, (g+1)·n) of the
// concatenation of all ranks' shards; rows_N[i] is the row of the micro-batch that
// concatenated row i is (so the gathered x_full is in the single process's token order).
// Forward: x_full (N,H) = every rank's x_shard (n,H) placed at its rows. Backward: dx_shard =
// this rank's rows of dx_full (the gradient of a computation replicated over the group).
void gather_context_sequence_forward(Communicator& group, const std::vector<int64_t>& rows_N,
                                     const float* x_shard, float* x_full, int64_t n, int64_t H,
                                     Tensor& scratch);
void gather_context_sequence_backward(Communicator& group, const std::vector<int64_t>& rows_N,
                                      const float* dx_full, float* dx_shard, int64_t n, int64_t H);

// split ↔ all-gather: a value computed identically on every rank of the group. Forward: y_shard
// = this rank's rows of y_full. Backward: dy_full = every rank's dy_shard placed at its rows.
void split_context_sequence_forward(Communicator& group, const std::vector<int64_t>& rows_N,
                                    const float* y_full, float* y_shard, int64_t n, int64_t H);
void split_context_sequence_backward(Communicator& group, const std::vector<int64_t>& rows_N,
                                     const float* dy_shard, float* dy_full, int64_t n, int64_t H,
                                     Tensor& scratch);

}  // namespace moefold
