// Pipeline point-to-point transfers over MPI: the paired primitives on their own, then a toy
// pipeline (each virtual stage v computes y = a_v·x + b_v on a vector, the loss is ½·Σ y²) run by
// a small executor from the schedules' action lists, for 1F1B, interleaved 1F1B and
// all-forward-all-backward. Each stage's parameter gradients and the last stage's per-micro-batch
// losses must equal a float64 run of the whole chain in one process. Run under mpirun at 2, 3
// and 4 ranks, with PP = world and, on 4 ranks, PP 2 × DP 2 (pipeline peers are not neighbours
// in the world then).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel/context.h"
#include "parallel/mpi_communicator.h"
#include "parallel/pipeline_p2p.h"
#include "parallel/pipeline_schedule.h"
#include "tensor/check.h"

namespace moefold {
namespace {

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

ParallelContext make_context(int pp) {
  ParallelConfig config;
  config.pipeline_model_parallel_size = pp;
  absl::StatusOr<ParallelContext> ctx = ParallelContext::create(config, MPI_COMM_WORLD);
  MOEFOLD_CHECK(ctx.ok(), ctx.status().message());
  return *std::move(ctx);
}

std::vector<int> pipeline_sizes() {
  const int world = world_size();
  std::vector<int> sizes = {world};
  if (world == 4) sizes.push_back(2);
  return sizes;
}

// Large enough (80 KB) that MPI uses its rendezvous protocol, not eager sends.
constexpr int64_t kWidth = 20000;

TEST(PipelineP2p, PairedPrimitivesReachTheirNeighbours) {
  for (int pp_size : pipeline_sizes()) {
    ParallelContext ctx = make_context(pp_size);
    Communicator& pp = *ctx.pp;
    const int stage = pp.rank();
    const PipelineScheduleShape shape{pp_size, stage, 1, 1};
    // One micro-batch up the pipeline (activation) and back down (gradient), by hand.
    PipelineAction recv{PipelineActionType::kRecvForward, PipelinePhase::kSteady, 0, 0,
                        (stage + pp_size - 1) % pp_size,
                        pipeline_tag(pp_size, 1, 0, stage - 1, false)};
    PipelineAction send{PipelineActionType::kSendForward, PipelinePhase::kSteady, 0, 0,
                        (stage + 1) % pp_size, pipeline_tag(pp_size, 1, 0, stage, false)};
    Tensor received = Tensor::zeros({kWidth});
    Tensor mine = Tensor::empty({kWidth});
    for (int64_t i = 0; i < kWidth; ++i) mine.data()[i] = float(stage * 1000 + i % 997);
    // Posted before anything is sent: the receive must wait for the neighbour.
    WorkHandle r = stage > 0 ? recv_forward(pp, recv, received) : WorkHandle();
    WorkHandle s = stage + 1 < pp_size ? send_forward(pp, send, mine) : WorkHandle();
    r.wait();
    s.wait();
    if (stage > 0) {
      for (int64_t i = 0; i < kWidth; ++i) {
        ASSERT_EQ(received.data()[i], float((stage - 1) * 1000 + i % 997)) << "index " << i;
      }
    }
    recv.type = PipelineActionType::kRecvBackward;
    recv.peer = (stage + 1) % pp_size;
    recv.tag = pipeline_tag(pp_size, 1, 0, stage, true);
    send.type = PipelineActionType::kSendBackward;
    send.peer = (stage + pp_size - 1) % pp_size;
    send.tag = pipeline_tag(pp_size, 1, 0, stage - 1, true);
    r = stage + 1 < pp_size ? recv_backward(pp, recv, received) : WorkHandle();
    s = stage > 0 ? send_backward(pp, send, mine) : WorkHandle();
    r.wait();
    s.wait();
    if (stage + 1 < pp_size) {
      EXPECT_EQ(received.data()[5], float((stage + 1) * 1000 + 5));
    }
    EXPECT_GE(peak_stashed_activations(PipelineScheduleKind::kOneForwardOneBackward, shape), 1);
  }
}

double weight(int v) { return 0.9 + 0.05 * v; }
double bias(int v) { return 0.01 * v; }
double input(int mb, int64_t i) { return 0.1 * mb + 0.001 * double(i % 1000); }

struct Reference {
  std::vector<double> losses;           // per micro-batch
  std::vector<double> d_weight, d_bias;  // per virtual stage
};

// The whole chain in float64 in one process.
Reference reference(int virtual_stages, int micro_batches) {
  Reference ref;
  ref.d_weight.assign(virtual_stages, 0);
  ref.d_bias.assign(virtual_stages, 0);
  for (int mb = 0; mb < micro_batches; ++mb) {
    std::vector<std::vector<double>> x(virtual_stages + 1, std::vector<double>(kWidth));
    for (int64_t i = 0; i < kWidth; ++i) x[0][i] = input(mb, i);
    for (int v = 0; v < virtual_stages; ++v)
      for (int64_t i = 0; i < kWidth; ++i) x[v + 1][i] = weight(v) * x[v][i] + bias(v);
    double loss = 0;
    std::vector<double> g = x[virtual_stages];
    for (double y : g) loss += 0.5 * y * y;
    ref.losses.push_back(loss);
    for (int v = virtual_stages - 1; v >= 0; --v) {
      for (int64_t i = 0; i < kWidth; ++i) {
        ref.d_weight[v] += g[i] * x[v][i];
        ref.d_bias[v] += g[i];
        g[i] *= weight(v);
      }
    }
  }
  return ref;
}

struct StageResult {
  std::map<int, double> losses;           // last virtual stage only
  std::map<int, double> d_weight, d_bias;  // by this rank's virtual stages
  int peak_stash = 0;
};

// A minimal executor of the pipeline_schedule.h contract for the toy model.
StageResult run_toy_pipeline(Communicator& pp, PipelineScheduleKind kind, int micro_batches,
                             int chunks) {
  const int pp_size = pp.size(), stage = pp.rank(), last_v = pp_size * chunks - 1;
  auto actions = build_pipeline_schedule(kind, {pp_size, stage, micro_batches, chunks});
  MOEFOLD_CHECK(actions.ok(), actions.status().message());
  using Unit = std::pair<int, int>;  // (micro_batch, chunk)
  std::map<Unit, Tensor> inputs, output_grads, stash, outputs, input_grads;
  PipelineTransfers transfers(pp);
  StageResult result;
  for (const PipelineAction& a : *actions) {
    const Unit unit{a.micro_batch, a.chunk};
    const int v = a.chunk * pp_size + stage;
    switch (a.type) {
      case PipelineActionType::kRecvForward:
        transfers.post(a, inputs[unit] = Tensor::empty({kWidth}));
        break;
      case PipelineActionType::kRecvBackward:
        transfers.post(a, output_grads[unit] = Tensor::empty({kWidth}));
        break;
      case PipelineActionType::kSendForward:
        transfers.post(a, outputs.at(unit));
        outputs.erase(unit);  // the transfer keeps the buffer alive
        break;
      case PipelineActionType::kSendBackward:
        transfers.post(a, input_grads.at(unit));
        input_grads.erase(unit);
        break;
      case PipelineActionType::kForward: {
        EXPECT_EQ(transfers.wait_input(a), v > 0);
        Tensor x = Tensor::empty({kWidth});
        if (v == 0) {
          for (int64_t i = 0; i < kWidth; ++i) x.data()[i] = float(input(a.micro_batch, i));
        } else {
          x = inputs.at(unit);
          inputs.erase(unit);
        }
        Tensor y = Tensor::empty({kWidth});
        for (int64_t i = 0; i < kWidth; ++i) {
          y.data()[i] = float(weight(v)) * x.data()[i] + float(bias(v));
        }
        stash[unit] = x;
        result.peak_stash = std::max(result.peak_stash, static_cast<int>(stash.size()));
        if (v == last_v) {  // the loss ½·Σ y², whose gradient is y
          double loss = 0;
          for (int64_t i = 0; i < kWidth; ++i) loss += 0.5 * double(y.data()[i]) * y.data()[i];
          result.losses[a.micro_batch] = loss;
          output_grads[unit] = y;
        } else {
          outputs[unit] = y;
        }
        break;
      }
      case PipelineActionType::kBackward: {
        EXPECT_EQ(transfers.wait_input(a), v < last_v);
        const Tensor g = output_grads.at(unit);
        Tensor dx = Tensor::empty({kWidth});
        for (int64_t i = 0; i < kWidth; ++i) dx.data()[i] = float(weight(v)) * g.data()[i];
        if (v > 0) input_grads[unit] = dx;
        if (kind == PipelineScheduleKind::kZeroBubble) break;  // dW in the weight pass
        [[fallthrough]];
      }
      case PipelineActionType::kWeight: {
        const Tensor g = output_grads.at(unit);
        const Tensor x = stash.at(unit);
        double dw = 0, db = 0;
        for (int64_t i = 0; i < kWidth; ++i) {
          dw += double(g.data()[i]) * x.data()[i];
          db += g.data()[i];
        }
        result.d_weight[v] += dw;
        result.d_bias[v] += db;
        output_grads.erase(unit);
        stash.erase(unit);
        break;
      }
    }
  }
  transfers.wait_sends();
  EXPECT_TRUE(transfers.idle());
  EXPECT_TRUE(stash.empty() && inputs.empty() && output_grads.empty());
  return result;
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-4 * std::max(1.0, std::abs(want))) << what;
}

// Lane matching (MpiCommunicator::set_lane_matching) pairs messages as NCCL does: by lane in
// posting order, with every message's tag checked where it arrives.
class LaneMatchingScope {
 public:
  explicit LaneMatchingScope(bool on) {
    MPI_Barrier(MPI_COMM_WORLD);  // no message in flight while it changes
    MpiCommunicator::set_lane_matching(on);
  }
  ~LaneMatchingScope() {
    MPI_Barrier(MPI_COMM_WORLD);
    MpiCommunicator::set_lane_matching(false);
  }
};

TEST(PipelineP2p, LaneMatchingNamesAMessagePostedOutOfOrder) {
  std::unique_ptr<MpiCommunicator> world = MpiCommunicator::duplicate(MPI_COMM_WORLD);
  world->set_label("world");
  const LaneMatchingScope lanes(true);
  std::vector<float> first(3, 1.0f), second(3, 2.0f);
  if (world->rank() == 0) {  // tags 2 and 4: both in lane 0
    WorkHandle a = world->send_async(first.data(), 3, CommDType::kFloat32, 1, 2);
    WorkHandle b = world->send_async(second.data(), 3, CommDType::kFloat32, 1, 4);
    a.wait();
    b.wait();
  } else if (world->rank() == 1) {  // posted in the other order: fine for MPI's tags only
    WorkHandle b = world->recv_async(second.data(), 3, CommDType::kFloat32, 0, 4);
    WorkHandle a = world->recv_async(first.data(), 3, CommDType::kFloat32, 0, 2);
    try {
      b.wait();
      ADD_FAILURE() << "the receive of tag 4 took the message of tag 2";
    } catch (const InternalError& e) {
      EXPECT_NE(std::string(e.what()).find("point-to-point lane order: rank 1 of world expected "
                                           "tag 4 (3 × 4 bytes) from rank 0 in lane 0 but got "
                                           "tag 2 (3 × 4 bytes)"),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(a.wait(), InternalError);
  }
}

void expect_toy_pipelines_match_one_process() {
  for (int pp_size : pipeline_sizes()) {
    ParallelContext ctx = make_context(pp_size);
    const int stage = ctx.pp->rank();
    struct Case {
      PipelineScheduleKind kind;
      int chunks;
    };
    for (const Case c : {Case{PipelineScheduleKind::kOneForwardOneBackward, 1},
                         Case{PipelineScheduleKind::kZeroBubble, 1},
                         Case{PipelineScheduleKind::kZeroBubble, 2},
                         Case{PipelineScheduleKind::kInterleaved, 2},
                         Case{PipelineScheduleKind::kAllForwardAllBackward, 1}}) {
      for (int m : {1, pp_size, 2 * pp_size + 1}) {
        SCOPED_TRACE(absl::StrCat(pipeline_schedule_kind_name(c.kind), " PP ", pp_size, " M ", m,
                                  " V ", c.chunks, " stage ", stage));
        const StageResult got = run_toy_pipeline(*ctx.pp, c.kind, m, c.chunks);
        const Reference want = reference(pp_size * c.chunks, m);
        EXPECT_EQ(got.peak_stash,
                  peak_stashed_activations(c.kind, {pp_size, stage, m, c.chunks}));
        for (int chunk = 0; chunk < c.chunks; ++chunk) {
          const int v = chunk * pp_size + stage;
          expect_close(got.d_weight.at(v), want.d_weight[v], absl::StrCat("d_weight ", v));
          expect_close(got.d_bias.at(v), want.d_bias[v], absl::StrCat("d_bias ", v));
        }
        if (stage == pp_size - 1) {
          ASSERT_EQ(got.losses.size(), static_cast<size_t>(m));
          for (int mb = 0; mb < m; ++mb) {
            expect_close(got.losses.at(mb), want.losses[mb], absl::StrCat("loss ", mb));
          }
        } else {
          EXPECT_TRUE(got.losses.empty());
        }
      }
    }
  }
}

TEST(PipelineP2p, ToyPipelineMatchesOneProcessForEverySchedule) {
  expect_toy_pipelines_match_one_process();
}

// As over NCCL: the schedules post each lane's transfers in one order at both ends.
TEST(PipelineP2p, ToyPipelineMatchesOneProcessWithLaneMatching) {
  const LaneMatchingScope lanes(true);
  expect_toy_pipelines_match_one_process();
}

}  // namespace
}  // namespace moefold
