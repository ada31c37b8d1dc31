#include "trainer/pipeline_executor.h"

#include <chrono>

#include "parallel/pipeline_p2p.h"
#include "parallel/tp_communication.h"
#include "tensor/check.h"
#include "tensor/wall_clock.h"

namespace moefold {
namespace {

int layer_count(const Model& model, int chunk) {
  return model.partition().layers(model.stage(), chunk).size();
}

}  // namespace

PipelineExecutor::PipelineExecutor(Model& model, const ParallelContext& ctx)
    : model_(model), ctx_(ctx) {}

std::unique_ptr<ModelStash> PipelineExecutor::acquire(int chunk) {
  std::vector<std::unique_ptr<ModelStash>>& pool = free_[layer_count(model_, chunk)];
  if (pool.empty()) {
    ++created_;
    return model_.make_stash(chunk);
  }
  std::unique_ptr<ModelStash> stash = std::move(pool.back());
  pool.pop_back();
  return stash;
}

void PipelineExecutor::release(int chunk, std::unique_ptr<ModelStash> stash) {
  free_[layer_count(model_, chunk)].push_back(std::move(stash));
}

std::vector<MicroBatchStats> PipelineExecutor::run(
    PipelineScheduleKind kind, const std::vector<TokenBatch>& batches, const LossScales* scales,
    const std::function<void(int micro_batch)>& before_backward) {
  MOEFOLD_CHECK((kind == PipelineScheduleKind::kForwardOnly) == (scales == nullptr),
                "loss scales are for training schedules");
  const auto start = std::chrono::steady_clock::now();
  times_ = {};
  const PipelineScheduleShape shape{ctx_.coords.pp_size, ctx_.coords.pp_rank,
                                    static_cast<int>(batches.size()), model_.chunks()};
  auto actions = build_pipeline_schedule(kind, shape);
  MOEFOLD_CHECK(actions.ok(), actions.status().message());
  const bool defer_weights = kind == PipelineScheduleKind::kZeroBubble;

  const TpRegion region{ctx_.tp.get(), ctx_.config.sequence_parallel};
  const int64_t H = model_.config().hidden_size;
  // (n,H) rows of a micro-batch's activations on this rank: its context shard of every sequence,
  // then its token shard under sequence parallelism.
  const auto rows = [&](int mb) {
    return region.local_rows(int64_t{batches[mb].batch} * batches[mb].seq / ctx_.coords.cp_size);
  };
  PipelineTransfers transfers(*ctx_.pp);
  std::map<Unit, Tensor> received;  // input activations / output gradients until computed on
  std::map<Unit, Tensor> outgoing;  // computed outputs / input gradients until posted
  std::map<Unit, std::unique_ptr<ModelStash>> in_flight;  // forwarded, backward not finished
  std::vector<MicroBatchStats> stats;
  for (const PipelineAction& a : *actions) {
    const Unit unit{a.micro_batch, a.chunk};
    switch (a.type) {
      case PipelineActionType::kRecvForward:
      case PipelineActionType::kRecvBackward: {
        Tensor buffer = Tensor::empty({rows(a.micro_batch), H}, model_.activation_dtype());
        transfers.post(a, buffer);
        received[unit] = buffer;
        break;
      }
      case PipelineActionType::kSendForward:
      case PipelineActionType::kSendBackward: {
        const auto it = outgoing.find(unit);
        MOEFOLD_CHECK(it != outgoing.end(), describe(a) << " before its computation");
        transfers.post(a, it->second);  // the transfers keep the buffer until wait_sends
        outgoing.erase(it);
        break;
      }
      case PipelineActionType::kForward: {
        const Tensor* input = nullptr;
        if (transfers.wait_input(a)) input = &received.at(unit);
        std::unique_ptr<ModelStash> stash = acquire(a.chunk);
        const auto compute_start = std::chrono::steady_clock::now();
        stats.push_back(
            model_.forward_chunk(a.chunk, batches[a.micro_batch], input, scales, *stash));
        times_.compute += seconds_since(compute_start);
        received.erase(unit);
        // A copy: the stash may be reused before the send completes.
        if (!model_.is_last_virtual_stage(a.chunk))
          outgoing[unit] = model_.chunk_output(*stash).clone();
        if (scales) {
          in_flight[unit] = std::move(stash);
        } else {
          release(a.chunk, std::move(stash));
        }
        break;
      }
      case PipelineActionType::kBackward: {
        const Tensor* d_output = nullptr;
        if (transfers.wait_input(a)) d_output = &received.at(unit);
        const auto it = in_flight.find(unit);
        MOEFOLD_CHECK(it != in_flight.end(), describe(a) << " without its forward");
        // Gradients accumulate, and the grad-ready hooks run, in the weight pass when deferred.
        if (before_backward && !defer_weights) before_backward(a.micro_batch);
        const auto compute_start = std::chrono::steady_clock::now();
        const Tensor* d_input =
            model_.backward_chunk(a.chunk, *it->second, d_output, defer_weights);
        times_.compute += seconds_since(compute_start);
        received.erase(unit);
        if (d_input != nullptr) outgoing[unit] = d_input->clone();
        if (defer_weights) break;  // the stash lives until the weight pass
        release(a.chunk, std::move(it->second));
        in_flight.erase(it);
        break;
      }
      case PipelineActionType::kWeight: {
        const auto it = in_flight.find(unit);
        MOEFOLD_CHECK(it != in_flight.end(), describe(a) << " without its forward");
        if (before_backward) before_backward(a.micro_batch);
        const auto compute_start = std::chrono::steady_clock::now();
        model_.weight_gradients_chunk(a.chunk, *it->second);
        times_.compute += seconds_since(compute_start);
        release(a.chunk, std::move(it->second));
        in_flight.erase(it);
        break;
      }
    }
  }
  transfers.wait_sends();
  MOEFOLD_CHECK(transfers.idle() && in_flight.empty() && outgoing.empty() && received.empty(),
                "the schedule left work behind");
  times_.total = seconds_since(start);
  return stats;
}

}  // namespace moefold
