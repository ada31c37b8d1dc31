// Pipeline schedules checked without MPI: a simulator runs every rank's action list together with
// the executor contract of pipeline_schedule.h (receives and sends posted asynchronously and
// matched as MPI does, by source and tag in posting order, or as NCCL does, by source and lane
// (communicator.h) in posting order; a computation blocks until the receive posted for it has
// its message). It checks that every send meets the receive meant for
// it, that the ranks never deadlock, that each (micro-batch, chunk) is forwarded then backwarded
// exactly once on every rank, and the peak number of stashed activations per stage. Swept over
// many (PP, M, V) shapes, with hand-worked orders for a few.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"

namespace moefold {
namespace {

using Kind = PipelineScheduleKind;
using Type = PipelineActionType;

// What a message carries: which boundary it crosses and for which micro-batch.
struct Payload {
  bool gradient = false;
  int micro_batch = 0;
  int from_virtual_stage = 0;  // the boundary after this virtual stage
  bool operator==(const Payload&) const = default;
};

std::string to_string(const Payload& p) {
  return absl::StrCat(p.gradient ? "gradient" : "activation", " of mb ", p.micro_batch,
                      " across boundary ", p.from_virtual_stage);
}

// How a receive finds its message: MPI's tags, or NCCL's lanes (no tags; posting order).
enum class Matching { kByTag, kByLane };

struct SimulationResult {
  std::string error;          // empty when every check passed
  std::vector<int> peak_stash;  // per stage
  std::vector<int> max_pending_receives;  // per stage: posted, not yet consumed by a computation
  std::vector<double> idle_fraction;      // per stage, with the durations given
  double makespan = 0;
};

class PipelineSimulator {
 public:
  PipelineSimulator(Kind kind, int pp_size, int micro_batches, int chunks, double forward_time,
                    double backward_time, Matching matching)
      : matching_(matching), pp_(pp_size), m_(micro_batches), v_(chunks),
        forward_only_(kind == Kind::kForwardOnly), split_backward_(kind == Kind::kZeroBubble),
        forward_time_(forward_time), backward_time_(backward_time), ranks_(pp_size) {
    for (int s = 0; s < pp_; ++s) {
      auto actions = build_pipeline_schedule(kind, {pp_, s, m_, v_});
      if (!actions.ok()) {
        error_ = std::string(actions.status().message());
        return;
      }
      ranks_[s].actions = std::move(*actions);
    }
  }

  SimulationResult run() {
    bool progress = true;
    while (error_.empty() && progress) {
      progress = false;
      for (int s = 0; s < pp_ && error_.empty(); ++s) {
        while (ranks_[s].pc < ranks_[s].actions.size() && step(s)) progress = true;
      }
    }
    if (error_.empty()) check_finished();
    SimulationResult result;
    result.error = error_;
    for (const Rank& r : ranks_) result.makespan = std::max(result.makespan, r.clock);
    for (const Rank& r : ranks_) {
      result.peak_stash.push_back(r.peak_stash);
      result.max_pending_receives.push_back(r.max_pending);
      result.idle_fraction.push_back(result.makespan > 0 ? 1 - r.busy / result.makespan : 0);
    }
    return result;
  }

 private:
  using Unit = std::pair<int, int>;             // (micro_batch, chunk)
  using Channel = std::tuple<int, int, int>;    // (source, destination, tag or lane)
  struct Receive {
    Payload expected;
    bool matched = false;
    double ready = 0;  // when the message's data was produced
  };
  struct Rank {
    std::vector<PipelineAction> actions;
    size_t pc = 0;
    double clock = 0, busy = 0;
    int stash = 0, peak_stash = 0, pending = 0, max_pending = 0;
    std::set<Unit> forwarded, backwarded, weighted;
    std::map<std::tuple<bool, int, int>, Receive*> posted;  // (gradient, mb, chunk)
    std::map<std::tuple<bool, int, int>, double> produced;  // output of a computation → time
  };

  int virtual_stage(int stage, int chunk) const { return chunk * pp_ + stage; }

  void fail(int stage, const PipelineAction& a, const std::string& what) {
    if (error_.empty()) {
      error_ = absl::StrCat("PP ", pp_, " M ", m_, " V ", v_, ": stage ", stage, " action ",
                            ranks_[stage].pc, " (", describe(a), "): ", what);
    }
  }

  Channel channel(int source, int destination, int tag) const {
    return {source, destination, matching_ == Matching::kByTag ? tag : p2p_lane(tag)};
  }

  // Messages and receives of one channel pair up in order.
  void match(const Channel& channel) {
    auto& messages = in_flight_[channel];
    auto& receives = waiting_[channel];
    while (!messages.empty() && !receives.empty()) {
      const auto [payload, ready] = messages.front();
      Receive* receive = receives.front();
      messages.pop_front();
      receives.pop_front();
      if (!(payload == receive->expected) && error_.empty()) {
        error_ = absl::StrCat("PP ", pp_, " M ", m_, " V ", v_, ": a receive expecting the ",
                              to_string(receive->expected), " got the ", to_string(payload));
      }
      receive->matched = true;
      receive->ready = ready;
    }
  }

  bool step(int stage) {
    Rank& r = ranks_[stage];
    const PipelineAction& a = r.actions[r.pc];
    const Unit unit{a.micro_batch, a.chunk};
    const int v = virtual_stage(stage, a.chunk);
    if (a.micro_batch < 0 || a.micro_batch >= m_ || a.chunk < 0 || a.chunk >= v_) {
      fail(stage, a, "micro-batch or chunk out of range");
      return false;
    }
    switch (a.type) {
      case Type::kRecvForward:
      case Type::kRecvBackward: {
        const bool gradient = a.type == Type::kRecvBackward;
        const int expected_peer = (stage + (gradient ? 1 : pp_ - 1)) % pp_;
        if (a.peer != expected_peer) fail(stage, a, "receive from a rank not its neighbour");
        receives_.emplace_back();
        Receive* receive = &receives_.back();
        receive->expected = {gradient, a.micro_batch, gradient ? v : v - 1};
        auto [it, inserted] = r.posted.emplace(std::make_tuple(gradient, a.micro_batch, a.chunk),
                                               receive);
        if (!inserted) fail(stage, a, "the same receive posted twice");
        r.max_pending = std::max(r.max_pending, ++r.pending);
        const Channel channel = this->channel(a.peer, stage, a.tag);
        waiting_[channel].push_back(receive);
        match(channel);
        break;
      }
      case Type::kSendForward:
      case Type::kSendBackward: {
        const bool gradient = a.type == Type::kSendBackward;
        const int expected_peer = (stage + (gradient ? pp_ - 1 : 1)) % pp_;
        if (a.peer != expected_peer) fail(stage, a, "send to a rank not its neighbour");
        const auto produced = r.produced.find({gradient, a.micro_batch, a.chunk});
        if (produced == r.produced.end()) {
          fail(stage, a, "send before the computation producing it");
          return false;
        }
        const Channel channel = this->channel(stage, a.peer, a.tag);
        in_flight_[channel].push_back(
            {Payload{gradient, a.micro_batch, gradient ? v - 1 : v}, produced->second});
        match(channel);
        break;
      }
      case Type::kForward:
      case Type::kBackward: {
        const bool forward = a.type == Type::kForward;
        const bool needs_input = forward ? v > 0 : v < pp_ * v_ - 1;
        double start = r.clock;
        if (needs_input) {
          const auto posted = r.posted.find({!forward, a.micro_batch, a.chunk});
          if (posted == r.posted.end()) {
            fail(stage, a, "computation without a posted receive for its input");
            return false;
          }
          if (!posted->second->matched) return false;  // blocked until the neighbour sends
          start = std::max(start, posted->second->ready);
          r.posted.erase(posted);
          --r.pending;
        }
        if (forward) {
          if (!r.forwarded.insert(unit).second) fail(stage, a, "forwarded twice");
          if (!forward_only_) r.peak_stash = std::max(r.peak_stash, ++r.stash);
        } else {
          if (!r.forwarded.count(unit)) fail(stage, a, "backward before forward");
          if (!r.backwarded.insert(unit).second) fail(stage, a, "backwarded twice");
          if (!split_backward_) --r.stash;  // else the stash lives until the weight pass
        }
        const double duration =
            forward ? forward_time_ : backward_time_ / (split_backward_ ? 2 : 1);
        r.clock = start + duration;
        r.busy += duration;
        r.produced[{!forward, a.micro_batch, a.chunk}] = r.clock;
        break;
      }
      case Type::kWeight: {
        if (!split_backward_) fail(stage, a, "a weight pass in a schedule without them");
        if (!r.backwarded.count(unit)) fail(stage, a, "weight pass before the backward");
        if (!r.weighted.insert(unit).second) fail(stage, a, "weight pass twice");
        --r.stash;
        r.clock += backward_time_ / 2;
        r.busy += backward_time_ / 2;
        break;
      }
    }
    ++r.pc;
    return error_.empty();
  }

  void check_finished() {
    std::vector<std::string> blocked;
    for (int s = 0; s < pp_; ++s) {
      const Rank& r = ranks_[s];
      if (r.pc < r.actions.size()) {
        blocked.push_back(absl::StrCat("stage ", s, " at ", describe(r.actions[r.pc])));
      }
    }
    if (!blocked.empty()) {
      error_ = absl::StrCat("PP ", pp_, " M ", m_, " V ", v_,
                            ": deadlock: ", absl::StrJoin(blocked, "; "));
      return;
    }
    for (int s = 0; s < pp_; ++s) {
      const Rank& r = ranks_[s];
      const size_t units = static_cast<size_t>(m_) * v_;
      const size_t backwards = forward_only_ ? 0 : units;
      const size_t weights = split_backward_ ? units : 0;
      if (r.forwarded.size() != units || r.backwarded.size() != backwards ||
          r.weighted.size() != weights || r.stash != 0) {
        error_ = absl::StrCat("PP ", pp_, " M ", m_, " V ", v_, ": stage ", s, " forwarded ",
                              r.forwarded.size(), " and backwarded ", r.backwarded.size(),
                              " of ", units, " (micro-batch, chunk) units");
        return;
      }
      if (!r.posted.empty()) {
        error_ = absl::StrCat("stage ", s, " ends with ", r.posted.size(), " unused receives");
        return;
      }
    }
    for (const auto& [channel, messages] : in_flight_) {
      if (!messages.empty()) {
        error_ = absl::StrCat("PP ", pp_, " M ", m_, " V ", v_, ": ", messages.size(),
                              " message(s) from stage ", std::get<0>(channel), " never received");
        return;
      }
    }
  }

  Matching matching_;
  int pp_, m_, v_;
  bool forward_only_;    // no backward: forwards keep nothing
  bool split_backward_;  // zero-bubble: backward = B then a later weight pass W, half each
  double forward_time_, backward_time_;
  std::vector<Rank> ranks_;
  std::deque<Receive> receives_;  // stable addresses
  std::map<Channel, std::deque<std::pair<Payload, double>>> in_flight_;
  std::map<Channel, std::deque<Receive*>> waiting_;
  std::string error_;
};

SimulationResult simulate(Kind kind, int pp, int m, int v, double forward_time = 1,
                          double backward_time = 2, Matching matching = Matching::kByTag) {
  return PipelineSimulator(kind, pp, m, v, forward_time, backward_time, matching).run();
}

struct SweepCase {
  Kind kind;
  std::vector<int> chunks;
};
const SweepCase kSweep[] = {{Kind::kForwardOnly, {1, 2}},
                            {Kind::kAllForwardAllBackward, {1, 2, 3}},
                            {Kind::kOneForwardOneBackward, {1}},
                            {Kind::kZeroBubble, {1, 2, 3}},
                            {Kind::kInterleaved, {2, 3, 4}}};

TEST(PipelineSchedule, SweepIsDeadlockFreeCompleteAndWithinItsStashBound) {
  int simulated = 0;
  for (const SweepCase& c : kSweep) {
    for (int chunks : c.chunks) {
      for (int pp = 1; pp <= 8; ++pp) {
        for (int m = 1; m <= 3 * pp + 1; ++m) {
          SCOPED_TRACE(absl::StrCat(pipeline_schedule_kind_name(c.kind), " PP ", pp, " M ", m,
                                    " V ", chunks));
          const SimulationResult result = simulate(c.kind, pp, m, chunks);
          ASSERT_EQ(result.error, "");
          ++simulated;
          for (int stage = 0; stage < pp; ++stage) {
            const PipelineScheduleShape shape{pp, stage, m, chunks};
            EXPECT_EQ(result.peak_stash[stage], peak_stashed_activations(c.kind, shape))
                << "stage " << stage;
            if (c.kind == Kind::kOneForwardOneBackward ||
                (c.kind == Kind::kZeroBubble && chunks == 1)) {
              EXPECT_LE(result.peak_stash[stage], pp - stage) << "stage " << stage;
            }
            if (c.kind == Kind::kAllForwardAllBackward) {
              EXPECT_EQ(result.peak_stash[stage], m * chunks);
            }
            // One receive being waited for, one posted ahead for the next computation.
            EXPECT_LE(result.max_pending_receives[stage], 2) << "stage " << stage;
          }
        }
      }
    }
  }
  EXPECT_GT(simulated, 500);
}

// Over NCCL a message meets the receive its lane has waiting, not the one of its tag: every
// schedule posts each lane's transfers in the same order at both ends, so the pairing (each
// receive gets the payload it expects) and the progress are those of the tag-matched runs.
TEST(PipelineSchedule, EveryScheduleRunsWithLaneMatchingAsOverNccl) {
  int simulated = 0;
  for (const SweepCase& c : kSweep) {
    for (int chunks : c.chunks) {
      const Kind kind = c.kind;
      for (int pp = 1; pp <= 8; ++pp) {
        for (int m = 1; m <= 3 * pp + 1; ++m) {
          SCOPED_TRACE(absl::StrCat(pipeline_schedule_kind_name(kind), " PP ", pp, " M ", m,
                                    " V ", chunks));
          const SimulationResult by_tag = simulate(kind, pp, m, chunks);
          const SimulationResult by_lane = simulate(kind, pp, m, chunks, 1, 2, Matching::kByLane);
          ASSERT_EQ(by_lane.error, "");
          EXPECT_EQ(by_lane.makespan, by_tag.makespan);
          EXPECT_EQ(by_lane.peak_stash, by_tag.peak_stash);
          ++simulated;
        }
      }
    }
  }
  EXPECT_GT(simulated, 500);
}

// The issue's shapes: PP ∈ {2,3,4}, M ∈ {PP−1 … 3·PP}, V ∈ {1,2}, for 1F1B (V=1) and
// interleaved (V=2), with the promised bounds spelled out.
TEST(PipelineSchedule, IssueShapesKeepTheirPromisedPeaks) {
  for (int pp = 2; pp <= 4; ++pp) {
    for (int m = pp - 1; m <= 3 * pp; ++m) {
      SCOPED_TRACE(absl::StrCat("PP ", pp, " M ", m));
      const SimulationResult one = simulate(Kind::kOneForwardOneBackward, pp, m, 1);
      ASSERT_EQ(one.error, "");
      const SimulationResult two = simulate(Kind::kInterleaved, pp, m, 2);
      ASSERT_EQ(two.error, "");
      for (int stage = 0; stage < pp; ++stage) {
        EXPECT_EQ(one.peak_stash[stage], std::min(pp - stage, m));
        const int group = interleave_group_size(pp, m);
        EXPECT_EQ(two.peak_stash[stage], std::min(2 * (pp - stage - 1) + group + 1, 2 * m));
      }
    }
  }
}

std::string compute_order(Kind kind, int pp, int stage, int m, int chunks) {
  auto actions = build_pipeline_schedule(kind, {pp, stage, m, chunks});
  EXPECT_TRUE(actions.ok()) << actions.status();
  std::vector<std::string> out;
  PipelinePhase phase = PipelinePhase::kWarmup;
  for (const PipelineAction& a : *actions) {
    if (!a.is_compute()) continue;
    if (a.phase != phase) out.push_back("|");
    phase = a.phase;
    out.push_back(absl::StrCat(a.type == Type::kForward ? "F" : "B", a.micro_batch,
                               chunks > 1 ? absl::StrCat(".", a.chunk) : ""));
  }
  return absl::StrJoin(out, " ");
}

TEST(PipelineSchedule, OneForwardOneBackwardPhasesByHand) {
  // PP 4, stage 1: two warm-up forwards (PP − stage − 1), then pairs, then the last backwards.
  EXPECT_EQ(compute_order(Kind::kOneForwardOneBackward, 4, 1, 6, 1),
            "F0 F1 | F2 B0 F3 B1 F4 B2 F5 B3 | B4 B5");
  // The last stage has no warm-up and no cool-down.
  EXPECT_EQ(compute_order(Kind::kOneForwardOneBackward, 4, 3, 3, 1), "| F0 B0 F1 B1 F2 B2");
  // Fewer micro-batches than warm-up slots: all forwards, then all backwards.
  EXPECT_EQ(compute_order(Kind::kOneForwardOneBackward, 4, 0, 2, 1), "F0 F1 | B0 B1");
  EXPECT_EQ(compute_order(Kind::kAllForwardAllBackward, 2, 1, 3, 1), "F0 F1 F2 | B0 B1 B2");
  EXPECT_EQ(compute_order(Kind::kForwardOnly, 2, 1, 3, 1), "F0 F1 F2");
  // One stage: forward then backward of each micro-batch, no transfers (DESIGN.md's step).
  EXPECT_EQ(compute_order(Kind::kOneForwardOneBackward, 1, 0, 3, 1), "| F0 B0 F1 B1 F2 B2");
  auto single = build_pipeline_schedule(Kind::kOneForwardOneBackward, {1, 0, 3, 1});
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->size(), 6u);
}

TEST(PipelineSchedule, InterleavedOrderMatchesMegatronCoreByHand) {
  // PP 2, V 2, M 4: groups of PP micro-batches per chunk; stage 0 warms up with
  // 2·(PP−0−1) + (V−1)·PP = 4 forwards; backwards run the chunks in reverse.
  EXPECT_EQ(compute_order(Kind::kInterleaved, 2, 0, 4, 2),
            "F0.0 F1.0 F0.1 F1.1 | F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 | B2.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(compute_order(Kind::kInterleaved, 2, 1, 4, 2),
            "F0.0 F1.0 | F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 | B2.0 B3.0");
}

TEST(PipelineSchedule, InterleaveGroupsAreThoseMegatronCoreAccepts) {
  EXPECT_EQ(interleave_group_size(4, 8), 4);  // PP divides M: Megatron-Core's default
  EXPECT_EQ(interleave_group_size(3, 7), 4);  // groups 4 + 3: the last one still ≥ PP
  EXPECT_EQ(interleave_group_size(4, 6), 6);  // 4 + 2 and 5 + 1 would stall: one group
  EXPECT_EQ(interleave_group_size(5, 7), 7);
  EXPECT_EQ(interleave_group_size(4, 3), 3);  // fewer micro-batches than stages
  // PP 3, M 7, V 2 runs groups {0..3} and {4..6}.
  EXPECT_EQ(compute_order(Kind::kInterleaved, 3, 2, 7, 2),
            "F0.0 F1.0 F2.0 F3.0 | F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.1 B3.1 F4.0 B0.0 F5.0 B1.0 "
            "F6.0 B2.0 F4.1 B3.0 F5.1 B4.1 F6.1 B5.1 | B6.1 B4.0 B5.0 B6.0");
}

TEST(PipelineSchedule, TransfersArePostedAroundTheirComputation) {
  // PP 2, stage 0, M 3: activations go up to stage 1, gradients come back; each receive is
  // posted before the computation ahead of the one that consumes it.
  auto actions = build_pipeline_schedule(Kind::kOneForwardOneBackward, {2, 0, 3, 1});
  ASSERT_TRUE(actions.ok());
  std::vector<std::string> got;
  for (const PipelineAction& a : *actions) got.push_back(describe(a));
  const std::vector<std::string> expected = {
      "forward mb 0 chunk 0 (warm-up)",
      "send_forward mb 0 chunk 0 peer 1 tag 0 (warm-up)",
      "recv_backward mb 0 chunk 0 peer 1 tag 1 (steady)",
      "forward mb 1 chunk 0 (steady)",
      "send_forward mb 1 chunk 0 peer 1 tag 4 (steady)",
      "backward mb 0 chunk 0 (steady)",
      "recv_backward mb 1 chunk 0 peer 1 tag 5 (steady)",
      "forward mb 2 chunk 0 (steady)",
      "send_forward mb 2 chunk 0 peer 1 tag 8 (steady)",
      "recv_backward mb 2 chunk 0 peer 1 tag 9 (cool-down)",
      "backward mb 1 chunk 0 (steady)",
      "backward mb 2 chunk 0 (cool-down)",
  };
  EXPECT_EQ(got, expected);
}

TEST(PipelineSchedule, WrappedTagsStillPairEachSendWithItsReceive) {
  // 2 directions × 4 boundaries × 4200 micro-batches exceed the 32768 tags MPI guarantees.
  const SimulationResult result = simulate(Kind::kInterleaved, 2, 4200, 2);
  EXPECT_EQ(result.error, "");
  EXPECT_GE(pipeline_tag(2, 2, 4200, 0, false), 0);
  EXPECT_LT(pipeline_tag(2, 2, 4200, 0, false), kPipelineTagSpace);
}

// With unit-free durations and free transfers, 1F1B and all-forward-all-backward idle each stage
// for (PP−1)/(M+PP−1) of the step; interleaving divides the bubble by V when PP divides M.
TEST(PipelineSchedule, BubbleMatchesTheory) {
  for (int pp = 2; pp <= 4; ++pp) {
    for (int m = pp; m <= 3 * pp; ++m) {
      SCOPED_TRACE(absl::StrCat("PP ", pp, " M ", m));
      const double bubble = double(pp - 1) / (m + pp - 1);
      for (Kind kind : {Kind::kOneForwardOneBackward, Kind::kAllForwardAllBackward}) {
        const SimulationResult r = simulate(kind, pp, m, 1, 1.0, 2.0);
        ASSERT_EQ(r.error, "");
        for (double idle : r.idle_fraction) EXPECT_NEAR(idle, bubble, 1e-12);
      }
      if (m % pp != 0) continue;
      for (int v : {2, 4}) {
        // Each chunk holds 1/V of the stage's layers.
        const SimulationResult r = simulate(Kind::kInterleaved, pp, m, v, 1.0 / v, 2.0 / v);
        ASSERT_EQ(r.error, "");
        const double interleaved = double(pp - 1) / (double(v) * m + pp - 1);
        for (double idle : r.idle_fraction) EXPECT_NEAR(idle, interleaved, 1e-12);
      }
    }
  }
}

// Zero-bubble with the backward split evenly into B and W (F = 1, B = W = 1): the weight passes
// fill the bubbles, so every shape with M ≥ PP ends sooner than 1F1B (whose bubble is
// (PP−1)·(F+B+W)), within the same activation stashes; ZB-H1's (PP−1)·(F+B−W) is the target.
// The same over interleaved 1F1B.
TEST(PipelineSchedule, ZeroBubbleShrinksTheBubble) {
  for (int pp = 2; pp <= 8; ++pp) {
    for (int m = pp; m <= 4 * pp; ++m) {
      SCOPED_TRACE(absl::StrCat("PP ", pp, " M ", m));
      const SimulationResult one = simulate(Kind::kOneForwardOneBackward, pp, m, 1, 1.0, 2.0);
      const SimulationResult zero = simulate(Kind::kZeroBubble, pp, m, 1, 1.0, 2.0);
      ASSERT_EQ(zero.error, "");
      EXPECT_LT(zero.makespan, one.makespan);
      EXPECT_LE(zero.makespan, 3.0 * m + 2.0 * (pp - 1));  // within one W per stage of ZB-H1
      for (int stage = 0; stage < pp; ++stage) {
        EXPECT_EQ(zero.peak_stash[stage], one.peak_stash[stage]) << "stage " << stage;
      }
      if (m % pp != 0) continue;
      // Over interleaved 1F1B with two chunks (each 1/2 of the stage's layers).
      const SimulationResult two = simulate(Kind::kInterleaved, pp, m, 2, 0.5, 1.0);
      const SimulationResult zero_two = simulate(Kind::kZeroBubble, pp, m, 2, 0.5, 1.0);
      ASSERT_EQ(zero_two.error, "");
      EXPECT_LT(zero_two.makespan, two.makespan);
      for (int stage = 0; stage < pp; ++stage) {
        EXPECT_EQ(zero_two.peak_stash[stage], two.peak_stash[stage]) << "stage " << stage;
      }
    }
  }
}

// PP 2, M 4 by hand: B of micro-batch 0 reaches stage 0 one unit earlier than the whole
// backward did, and stage 0 runs its deferred W's where 1F1B waited.
TEST(PipelineSchedule, ZeroBubbleOrderByHand) {
  auto actions = build_pipeline_schedule(Kind::kZeroBubble, {2, 0, 4, 1});
  ASSERT_TRUE(actions.ok()) << actions.status();
  std::vector<std::string> order;
  for (const PipelineAction& a : *actions) {
    if (!a.is_compute()) continue;
    const char* letter = a.type == Type::kForward ? "F" : a.type == Type::kBackward ? "B" : "W";
    order.push_back(absl::StrCat(letter, a.micro_batch));
  }
  EXPECT_EQ(absl::StrJoin(order, " "), "F0 F1 B0 W0 F2 B1 W1 F3 B2 W2 B3 W3");
}

TEST(PipelineSchedule, RejectsShapesItCannotRun) {
  const auto message = [](Kind kind, PipelineScheduleShape shape) {
    auto actions = build_pipeline_schedule(kind, shape);
    EXPECT_FALSE(actions.ok());
    return std::string(actions.status().message());
  };
  EXPECT_EQ(message(Kind::kOneForwardOneBackward, {2, 0, 4, 2}),
            "1F1B schedule: 1F1B runs one model chunk per rank, not 2 (use the interleaved "
            "schedule)");
  EXPECT_EQ(message(Kind::kInterleaved, {2, 0, 4, 1}),
            "interleaved 1F1B schedule: interleaved 1F1B needs at least 2 model chunks per rank, "
            "not 1");
  EXPECT_EQ(message(Kind::kOneForwardOneBackward, {2, 2, 4, 1}),
            "1F1B schedule: pipeline stage 2 is outside [0, 2)");
  EXPECT_EQ(message(Kind::kAllForwardAllBackward, {2, 0, 0, 1}),
            "all-forward-all-backward schedule: number of micro-batches 0 is below 1");
}

TEST(PipelineSchedule, KindFromTheRecipe) {
  ParallelConfig config;
  config.pipeline_model_parallel_size = 4;
  EXPECT_EQ(pipeline_schedule_kind(config), Kind::kOneForwardOneBackward);
  EXPECT_EQ(model_chunks(config), 1);
  config.virtual_pipeline_model_parallel_size = 3;
  EXPECT_EQ(pipeline_schedule_kind(config), Kind::kInterleaved);
  EXPECT_EQ(model_chunks(config), 3);
  config.zero_bubble_pipeline = true;
  EXPECT_EQ(pipeline_schedule_kind(config), Kind::kZeroBubble);
  config.virtual_pipeline_model_parallel_size = 0;
  EXPECT_EQ(pipeline_schedule_kind(config), Kind::kZeroBubble);
  EXPECT_EQ(model_chunks(config), 1);
}

}  // namespace
}  // namespace moefold
