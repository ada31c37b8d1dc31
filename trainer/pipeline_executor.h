// Runs this rank's pipeline schedule (parallel/pipeline_schedule.h) with the model: the small
// executor of DESIGN.md's step. For each action of the list, in order:
//
//   recv      post the receive of the (n,H) activation / gradient (pipeline_p2p.h)
//   forward   wait for its input, Model::forward_chunk into a stash, keep the output for the send
//   send      post the send of what the computation before it produced
//   backward  wait for the output gradient, Model::backward_chunk, return the stash to the pool
//             (zero-bubble: the input gradient only; the stash waits for its weight pass)
//   weight    Model::weight_gradients_chunk, return the stash to the pool
//   (end)     wait for every send
//
// Stashes are pooled (by the chunk's layer count, so equal chunks share them) and reused across
// steps, so a stage holds as many as its schedule keeps in flight at once
// (peak_stashed_activations) and its activation memory follows the schedule's bound. Without
// pipeline parallelism the schedule is forward then backward of each micro-batch on one stage: the
// same code.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "model/model.h"
#include "parallel/context.h"
#include "parallel/pipeline_schedule.h"

namespace moefold {

// Where one step's time went on this rank (wall seconds).
struct PipelineTimes {
  double compute = 0;  // inside forward_chunk / backward_chunk
  double total = 0;    // the whole action list, sends included
  // Idle share of the step: waiting for neighbours (the bubble) and for transfers.
  double idle_fraction() const { return total > 0 ? 1.0 - compute / total : 0.0; }
};

class PipelineExecutor {
 public:
  // `model` must outlive the executor. Every rank of ctx.pp runs the same kind of schedule.
  PipelineExecutor(Model& model, const ParallelContext& ctx);

  // Runs the `kind` schedule over this rank's micro-batches (every pipeline stage reads the same
  // ones). With `scales` each forward prepares backward; kForwardOnly takes none. before_backward
  // is called with the micro-batch index just before each backward, or each weight pass when
  // they are deferred (where the grad-ready hooks run: the data-parallel layer needs to know the
  // last one). Returns the stats of every forward this rank ran, in order.
  std::vector<MicroBatchStats> run(
      PipelineScheduleKind kind, const std::vector<TokenBatch>& batches, const LossScales* scales,
      const std::function<void(int micro_batch)>& before_backward = {});

  const PipelineTimes& last_times() const { return times_; }
  // Stashes this rank created (and holds): with equal chunks, the most (micro_batch, chunk)
  // activations it kept at once over all steps run so far.
  int stashes_created() const { return created_; }

 private:
  using Unit = std::pair<int, int>;  // (micro_batch, chunk)
  std::unique_ptr<ModelStash> acquire(int chunk);

  Model& model_;
  ParallelContext ctx_;
  void release(int chunk, std::unique_ptr<ModelStash> stash);

  std::map<int, std::vector<std::unique_ptr<ModelStash>>> free_;  // by the chunk's layer count
  int created_ = 0;
  PipelineTimes times_;
};

}  // namespace moefold
