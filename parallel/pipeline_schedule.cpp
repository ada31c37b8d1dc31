#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moefold {
namespace {

struct Compute {
  bool forward = true;
  int micro_batch = 0;
  int chunk = 0;
  PipelinePhase phase = PipelinePhase::kWarmup;
  bool weight = false;  // a deferred weight-gradient pass (forward is then false)
};

// Megatron-Core's get_schedule_table: micro-batches in groups of `group`; inside a group every
// micro-batch runs chunk 0, then every one runs chunk 1, ... The k-th forward of every rank is
// entry k; the k-th backward runs entry k's micro-batch on the mirrored chunk V−1−c.
std::vector<std::pair<int, int>> schedule_table(int micro_batches, int chunks, int group) {
  std::vector<std::pair<int, int>> table;  // (micro_batch, chunk)
  table.reserve(static_cast<size_t>(micro_batches) * chunks);
  for (int first = 0; first < micro_batches; first += group) {
    const int end = std::min(first + group, micro_batches);
    for (int chunk = 0; chunk < chunks; ++chunk)
      for (int mb = first; mb < end; ++mb) table.emplace_back(mb, chunk);
  }
  return table;
}

// The order of this rank's forwards and backwards: warm-up forwards, then steady pairs (forward
// k + warm-up, backward k), then the remaining backwards.
std::vector<Compute> compute_order(PipelineScheduleKind kind, const PipelineScheduleShape& s) {
  const int total = s.num_micro_batches * s.chunks;
  const int group = interleave_group_size(s.pp_size, s.num_micro_batches);
  const std::vector<std::pair<int, int>> table =
      schedule_table(s.num_micro_batches, s.chunks, group);
  const int warmup = pipeline_warmup_forwards(kind, s);
  const auto forward = [&](int k, PipelinePhase phase) {
    return Compute{true, table[k].first, table[k].second, phase};
  };
  const auto backward = [&](int k, PipelinePhase phase) {
    return Compute{false, table[k].first, s.chunks - 1 - table[k].second, phase};
  };
  std::vector<Compute> order;
  order.reserve(2 * static_cast<size_t>(total));
  for (int k = 0; k < warmup; ++k) order.push_back(forward(k, PipelinePhase::kWarmup));
  if (kind == PipelineScheduleKind::kForwardOnly) return order;
  for (int k = 0; k < total - warmup; ++k) {
    order.push_back(forward(k + warmup, PipelinePhase::kSteady));
    order.push_back(backward(k, PipelinePhase::kSteady));
  }
  for (int k = total - warmup; k < total; ++k) {
    order.push_back(backward(k, PipelinePhase::kCooldown));
  }
  return order;
}

// The transfer a computation waits for (is_receive) or produces; false when there is none: the
// first virtual stage's forward reads the batch, the last one's backward starts from the loss.
bool transfer_of(const Compute& c, const PipelineScheduleShape& s, bool is_receive,
                 PipelineAction& out) {
  if (c.weight) return false;  // W reads only its own stash
  const int virtual_stages = s.pp_size * s.chunks;
  const int v = c.chunk * s.pp_size + s.stage;
  const int next = (s.stage + 1) % s.pp_size, prev = (s.stage + s.pp_size - 1) % s.pp_size;
  out = PipelineAction{};
  out.phase = c.phase;
  out.micro_batch = c.micro_batch;
  out.chunk = c.chunk;
  if (c.forward && is_receive) {  // input activation from v−1
    if (v == 0) return false;
    out.type = PipelineActionType::kRecvForward;
    out.peer = prev;
    out.tag = pipeline_tag(s.pp_size, s.chunks, c.micro_batch, v - 1, false);
  } else if (c.forward) {  // output activation to v+1
    if (v == virtual_stages - 1) return false;
    out.type = PipelineActionType::kSendForward;
    out.peer = next;
    out.tag = pipeline_tag(s.pp_size, s.chunks, c.micro_batch, v, false);
  } else if (is_receive) {  // output gradient from v+1
    if (v == virtual_stages - 1) return false;
    out.type = PipelineActionType::kRecvBackward;
    out.peer = next;
    out.tag = pipeline_tag(s.pp_size, s.chunks, c.micro_batch, v, true);
  } else {  // input gradient to v−1
    if (v == 0) return false;
    out.type = PipelineActionType::kSendBackward;
    out.peer = prev;
    out.tag = pipeline_tag(s.pp_size, s.chunks, c.micro_batch, v - 1, true);
  }
  return true;
}

// The schedule a zero-bubble one builds on: interleaved 1F1B with several chunks, else 1F1B.
PipelineScheduleKind zero_bubble_base(const PipelineScheduleShape& s) {
  return s.chunks > 1 ? PipelineScheduleKind::kInterleaved
                      : PipelineScheduleKind::kOneForwardOneBackward;
}

// ZB-H1: every stage's (interleaved) 1F1B order of forwards and input-gradient backwards is
// kept; each backward's weight-gradient pass W is placed by simulating the whole pipeline with
// unit durations: a stage whose next forward or backward still waits for its input runs its
// oldest pending W instead, as it does when one more forward would hold more stashes than the
// base schedule's peak; the W's left run at the end. A pure function of the shape, so the ranks
// of a stage (whose W's may hold collectives, e.g. tensor or expert parallel) agree on the order.
std::vector<Compute> zero_bubble_order(const PipelineScheduleShape& s) {
  const int P = s.pp_size, M = s.num_micro_batches, V = s.chunks;
  const PipelineScheduleKind base = zero_bubble_base(s);
  std::vector<std::vector<Compute>> plain(P), placed(P);
  std::vector<int> cap(P);
  for (int stage = 0; stage < P; ++stage) {
    PipelineScheduleShape shape = s;
    shape.stage = stage;
    plain[stage] = compute_order(base, shape);
    cap[stage] = peak_stashed_activations(base, shape);
  }
  // Completion times of the forwards and backwards of (virtual stage, micro-batch); < 0 = not
  // yet simulated.
  std::vector<std::vector<double>> forward_done(P * V, std::vector<double>(M, -1));
  std::vector<std::vector<double>> backward_done(P * V, std::vector<double>(M, -1));
  std::vector<double> clock(P, 0);
  std::vector<size_t> next(P, 0);
  std::vector<std::vector<Compute>> pending(P);  // backwards whose W is still to run
  std::vector<int> stashed(P, 0);                // forwarded, W not yet run
  const auto input_ready = [&](int stage, const Compute& c) -> double {
    const int v = c.chunk * P + stage;
    if (c.forward) return v == 0 ? 0 : forward_done[v - 1][c.micro_batch];
    if (v == P * V - 1) return forward_done[v][c.micro_batch];
    return backward_done[v + 1][c.micro_batch];
  };
  const auto run_weight = [&](int stage) {
    Compute w = pending[stage].front();
    pending[stage].erase(pending[stage].begin());
    w.weight = true;
    w.phase = placed[stage].empty() ? PipelinePhase::kSteady : placed[stage].back().phase;
    --stashed[stage];
    clock[stage] += 1;
    placed[stage].push_back(w);
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int stage = 0; stage < P; ++stage) {
      while (next[stage] < plain[stage].size()) {
        const Compute& c = plain[stage][next[stage]];
        const double ready = input_ready(stage, c);
        const bool over_stash = c.forward && stashed[stage] >= cap[stage];
        if (!pending[stage].empty() && (ready < 0 || ready > clock[stage] || over_stash)) {
          run_weight(stage);
          progress = true;
          continue;
        }
        if (ready < 0) break;  // its input comes from a stage not simulated that far yet
        clock[stage] = std::max(clock[stage], ready) + 1;
        const int v = c.chunk * P + stage;
        if (c.forward) {
          forward_done[v][c.micro_batch] = clock[stage];
          ++stashed[stage];
        } else {
          backward_done[v][c.micro_batch] = clock[stage];
          pending[stage].push_back(c);
        }
        placed[stage].push_back(c);
        ++next[stage];
        progress = true;
      }
    }
  }
  while (!pending[s.stage].empty()) run_weight(s.stage);
  return placed[s.stage];
}

absl::Status validate_shape(PipelineScheduleKind kind, const PipelineScheduleShape& s) {
  if (s.pp_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline size ", s.pp_size, " is below 1"));
  }
  if (s.stage < 0 || s.stage >= s.pp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline stage ", s.stage, " is outside [0, ", s.pp_size, ")"));
  }
  if (s.num_micro_batches < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("number of micro-batches ", s.num_micro_batches, " is below 1"));
  }
  if (s.chunks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model chunks ", s.chunks, " is below 1"));
  }
  if (kind == PipelineScheduleKind::kOneForwardOneBackward && s.chunks != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "1F1B runs one model chunk per rank, not ", s.chunks, " (use the interleaved schedule)"));
  }
  if (kind == PipelineScheduleKind::kInterleaved && s.chunks < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("interleaved 1F1B needs at least 2 model chunks per rank, not ", s.chunks));
  }
  return absl::OkStatus();
}

}  // namespace

int pipeline_tag(int pp_size, int chunks, int micro_batch, int from_virtual_stage,
                 bool gradient) {
  const int64_t boundary = int64_t{micro_batch} * pp_size * chunks + from_virtual_stage;
  // kPipelineTagSpace is even, so the direction bit survives the wrap.
  return static_cast<int>((boundary * 2 + (gradient ? 1 : 0)) % kPipelineTagSpace);
}

PipelineScheduleKind pipeline_schedule_kind(const ParallelConfig& config) {
  if (config.zero_bubble_pipeline) return PipelineScheduleKind::kZeroBubble;
  return config.virtual_pipeline_model_parallel_size >= 2
             ? PipelineScheduleKind::kInterleaved
             : PipelineScheduleKind::kOneForwardOneBackward;
}

int model_chunks(const ParallelConfig& config) {
  return std::max(1, config.virtual_pipeline_model_parallel_size);
}

int interleave_group_size(int pp_size, int num_micro_batches) {
  if (num_micro_batches <= pp_size) return num_micro_batches;
  for (int group = pp_size; group < num_micro_batches; ++group) {
    const int last = num_micro_batches % group;
    if (last == 0 || last >= pp_size) return group;
  }
  return num_micro_batches;
}

int pipeline_warmup_forwards(PipelineScheduleKind kind, const PipelineScheduleShape& s) {
  const int total = s.num_micro_batches * s.chunks;
  const int later_stages = s.pp_size - s.stage - 1;
  if (kind == PipelineScheduleKind::kAllForwardAllBackward ||
      kind == PipelineScheduleKind::kForwardOnly) {
    return total;
  }
  if (kind == PipelineScheduleKind::kZeroBubble) kind = zero_bubble_base(s);
  if (kind == PipelineScheduleKind::kOneForwardOneBackward) return std::min(later_stages, total);
  // Interleaved, as Megatron-Core: two per later stage (one forward to fill it, one for its
  // gradient to travel back), plus the first V−1 chunk groups every rank runs before a backward.
  const int group = interleave_group_size(s.pp_size, s.num_micro_batches);
  return std::min(2 * later_stages + (s.chunks - 1) * group, total);
}

int peak_stashed_activations(PipelineScheduleKind kind, const PipelineScheduleShape& s) {
  if (kind == PipelineScheduleKind::kForwardOnly) return 0;
  return std::min(pipeline_warmup_forwards(kind, s) + 1, s.num_micro_batches * s.chunks);
}

absl::StatusOr<std::vector<PipelineAction>> build_pipeline_schedule(
    PipelineScheduleKind kind, const PipelineScheduleShape& shape) {
  if (absl::Status s = validate_shape(kind, shape); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(pipeline_schedule_kind_name(kind), " schedule: ", s.message()));
  }
  const std::vector<Compute> order = kind == PipelineScheduleKind::kZeroBubble
                                         ? zero_bubble_order(shape)
                                         : compute_order(kind, shape);
  std::vector<PipelineAction> actions;
  actions.reserve(3 * order.size());
  PipelineAction transfer;
  // The receive for computation k+1 is posted before computation k runs (k = 0 posts its own
  // first), so each input is in flight while the previous computation works.
  if (transfer_of(order[0], shape, true, transfer)) actions.push_back(transfer);
  for (size_t k = 0; k < order.size(); ++k) {
    if (k + 1 < order.size() && transfer_of(order[k + 1], shape, true, transfer)) {
      actions.push_back(transfer);
    }
    const Compute& c = order[k];
    PipelineAction compute;
    compute.type = c.weight    ? PipelineActionType::kWeight
                   : c.forward ? PipelineActionType::kForward
                               : PipelineActionType::kBackward;
    compute.phase = c.phase;
    compute.micro_batch = c.micro_batch;
    compute.chunk = c.chunk;
    actions.push_back(compute);
    if (transfer_of(c, shape, false, transfer)) actions.push_back(transfer);
  }
  return actions;
}

const char* pipeline_schedule_kind_name(PipelineScheduleKind kind) {
  switch (kind) {
    case PipelineScheduleKind::kAllForwardAllBackward:
      return "all-forward-all-backward";
    case PipelineScheduleKind::kOneForwardOneBackward:
      return "1F1B";
    case PipelineScheduleKind::kInterleaved:
      return "interleaved 1F1B";
    case PipelineScheduleKind::kZeroBubble:
      return "zero-bubble 1F1B";
    case PipelineScheduleKind::kForwardOnly:
      return "forward-only";
  }
  return "?";
}

const char* pipeline_action_type_name(PipelineActionType type) {
  switch (type) {
    case PipelineActionType::kRecvForward:
      return "recv_forward";
    case PipelineActionType::kForward:
      return "forward";
    case PipelineActionType::kSendForward:
      return "send_forward";
    case PipelineActionType::kRecvBackward:
      return "recv_backward";
    case PipelineActionType::kBackward:
      return "backward";
    case PipelineActionType::kSendBackward:
      return "send_backward";
    case PipelineActionType::kWeight:
      return "weight";
  }
  return "?";
}

const char* pipeline_phase_name(PipelinePhase phase) {
  switch (phase) {
    case PipelinePhase::kWarmup:
      return "warm-up";
    case PipelinePhase::kSteady:
      return "steady";
    case PipelinePhase::kCooldown:
      return "cool-down";
  }
  return "?";
}

std::string describe(const PipelineAction& a) {
  std::string out = absl::StrCat(pipeline_action_type_name(a.type), " mb ", a.micro_batch,
                                 " chunk ", a.chunk);
  if (!a.is_compute()) absl::StrAppend(&out, " peer ", a.peer, " tag ", a.tag);
  absl::StrAppend(&out, " (", pipeline_phase_name(a.phase), ")");
  return out;
}

}  // namespace moefold
