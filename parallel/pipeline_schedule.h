// Pipeline schedules as data (STYLE.md rule 8): a pure function, free of MPI, returns the ordered
// list of actions one pipeline rank runs for one step; a small executor runs the list. Training
// schedules: all-forward-all-backward (GPipe), 1F1B with picotron's labelled warm-up / steady /
// cool-down phases, and interleaved 1F1B with several model chunks per rank in Megatron-Core's
// order (forward_backward_pipelining_with_interleaving), zero-bubble 1F1B (ZB-H1: backward split
// into the input gradient B, which the previous stage waits for, and the weight gradient W, which
// nobody waits for and fills the bubbles); plus forward-only for evaluation.
//
// Virtual stages. With V model chunks per rank the model is cut into PP·V consecutive pieces;
// piece v = chunk·PP + stage lives on pipeline rank `stage` as its chunk `chunk`. Activations flow
// v → v+1 (so from the last rank's chunk c to the first rank's chunk c+1), gradients v+1 → v.
// With V = 1 this is the plain pipeline.
//
// How an executor runs the list (the contract the schedule tests simulate):
// - kRecvForward / kRecvBackward post an asynchronous receive (pipeline_p2p.h) of the input
//   activation / output gradient of (micro_batch, chunk). They are listed one computation ahead:
//   the receive for the next computation is posted before the current one runs.
// - kForward / kBackward first wait for the receive posted for the same (micro_batch, chunk), if
//   any (the first virtual stage's forward reads the batch, the last one's backward starts from
//   the loss), then compute. Forward stashes the activations that backward consumes and frees.
// - kSendForward / kSendBackward post an asynchronous send of the output activation / input
//   gradient just computed. Sends are never waited for inside the list; their buffers stay alive
//   until the executor waits for all of them at the end of the step.
// So a rank only ever blocks before a computation, on data its neighbour produces; the schedules
// are deadlock-free exactly when that dependency order is acyclic, which the tests check.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/parallel_config.h"

namespace moefold {

enum class PipelineScheduleKind {
  kAllForwardAllBackward,  // GPipe: every forward, then every backward
  kOneForwardOneBackward,  // 1F1B (one model chunk per rank)
  kInterleaved,            // interleaved 1F1B (two or more model chunks per rank)
  kZeroBubble,  // (interleaved) 1F1B with weight gradients deferred into the bubbles (ZB-H1)
  kForwardOnly,            // evaluation: every forward, no backward, nothing stashed
};

enum class PipelineActionType {
  kRecvForward,   // post the receive of (micro_batch, chunk)'s input activation from `peer`
  kForward,       // forward of (micro_batch, chunk)
  kSendForward,   // post the send of (micro_batch, chunk)'s output activation to `peer`
  kRecvBackward,  // post the receive of d loss / d (micro_batch, chunk)'s output from `peer`
  kBackward,      // backward of (micro_batch, chunk)
  kSendBackward,  // post the send of d loss / d (micro_batch, chunk)'s input to `peer`
  kWeight,        // weight gradients of (micro_batch, chunk), deferred by its backward (ZB)
};

// The phase of the computation an action serves: warm-up forwards, steady one-forward-one-
// backward pairs, cool-down backwards. All-forward-all-backward has warm-up and cool-down only.
enum class PipelinePhase { kWarmup, kSteady, kCooldown };

struct PipelineAction {
  PipelineActionType type = PipelineActionType::kForward;
  PipelinePhase phase = PipelinePhase::kWarmup;
  int micro_batch = 0;
  int chunk = 0;  // this rank's model chunk, 0 ≤ chunk < V
  int peer = -1;  // pipeline rank of the neighbour for a send or receive; -1 for computations
  int tag = -1;   // message tag for a send or receive (pipeline_tag); -1 for computations

  bool is_compute() const {
    return type == PipelineActionType::kForward || type == PipelineActionType::kBackward ||
           type == PipelineActionType::kWeight;
  }
  bool operator==(const PipelineAction&) const = default;
};

struct PipelineScheduleShape {
  int pp_size = 1;
  int stage = 0;  // this rank's pipeline rank
  int num_micro_batches = 1;
  int chunks = 1;  // model chunks per rank, V
};

// MPI guarantees tags up to 32767. Tags wrap around this space; because both ends post the
// transfers of one (sender, receiver, direction) in the same order and MPI matches messages of
// one tag in order, wrapped tags still pair each send with its own receive.
inline constexpr int kPipelineTagSpace = 32768;

// Tag of the message crossing the boundary after virtual stage `from_virtual_stage` for
// `micro_batch`: activations (gradient = false) flow up across it, gradients down.
int pipeline_tag(int pp_size, int chunks, int micro_batch, int from_virtual_stage, bool gradient);

// The schedule a recipe asks for: zero-bubble when zero_bubble_pipeline (over interleaved 1F1B
// when virtual_pipeline_model_parallel_size ≥ 2), else interleaved when
// virtual_pipeline_model_parallel_size ≥ 2, else 1F1B. model_chunks is V (1 without
// interleaving).
PipelineScheduleKind pipeline_schedule_kind(const ParallelConfig& config);
int model_chunks(const ParallelConfig& config);

// This rank's actions for one step. Errors name the offending value: sizes below 1, a stage
// outside [0, pp_size), 1F1B with more than one chunk, interleaved with fewer than two.
absl::StatusOr<std::vector<PipelineAction>> build_pipeline_schedule(
    PipelineScheduleKind kind, const PipelineScheduleShape& shape);

// Micro-batches per chunk group of the interleaved schedule (Megatron-Core's
// microbatch_group_size_per_vp_stage): inside a group each micro-batch runs chunk 0, then each
// runs chunk 1, and so on. PP when it divides M, as Megatron-Core's default. Otherwise the
// smallest G ≥ PP whose last group is empty or holds at least PP micro-batches, the values
// Megatron-Core accepts (a shorter last group stalls the pipeline; the tests find it deadlocks).
// M itself when M ≤ PP (one group; Megatron-Core rejects M < PP, the tests show it runs).
int interleave_group_size(int pp_size, int num_micro_batches);

// Warm-up forwards of this rank (the number of (micro_batch, chunk) forwards before the first
// backward, counting the steady phase's first forward out). 1F1B: min(PP − stage − 1, M).
// Interleaved: min(2·(PP − stage − 1) + (V − 1)·G, M·V) with G = interleave_group_size.
// All-forward-all-backward and forward-only: M·V.
int pipeline_warmup_forwards(PipelineScheduleKind kind, const PipelineScheduleShape& shape);

// The most (micro_batch, chunk) activation stashes this rank holds at once (forwarded, not yet
// backwarded; under zero-bubble, not yet through W): warm-up + 1, capped at M·V; zero-bubble
// keeps the bound of the schedule it builds on. 1F1B: min(PP − stage, M), the schedule's
// promise. Each stash holds one chunk's layers, i.e. 1/V of the rank's layers. Forward-only: 0.
int peak_stashed_activations(PipelineScheduleKind kind, const PipelineScheduleShape& shape);

const char* pipeline_schedule_kind_name(PipelineScheduleKind kind);
const char* pipeline_action_type_name(PipelineActionType type);
const char* pipeline_phase_name(PipelinePhase phase);
std::string describe(const PipelineAction& action);  // "forward mb 3 chunk 1 (steady)"

}  // namespace moefold
