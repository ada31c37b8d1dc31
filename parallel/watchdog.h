// Watchdog: every blocking wait on communication has a deadline (Megatron's
// --distributed-timeout-minutes). A monitor thread watches the waits in progress; when one has
// lasted longer than the timeout, the rank prints one line naming what it waited for (the
// collective or p2p, the group's kind and ranks), its own rank, the iteration and the phase of
// the step, and the culprit where it can be known, then ends the job through the installed
// abort (MPI_Abort): a hung job always ends, and every rank that can still speak says where it
// waited and for whom.
//
// The culprit comes from an arrival record (ArrivalRecord) that every rank of a node publishes
// in shared memory (parallel/arrival_board.h) and the watchdogs read with plain loads, so a
// stopped rank's record is read without its help: a heartbeat its monitor advances while the
// process runs, and per group the number of collectives it has entered. A rank of the waiting
// group that is not running, or has not entered the collective waited for, is named.
//
// Process-wide on purpose (like a flight recorder): waits happen deep inside communicators that
// know nothing of the trainer, and the report must reach them without being passed down.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace moefold::watchdog {

// Starts the monitor: waits longer than `timeout_seconds` (> 0) end the process through `abort`
// after the report line. Replaces an earlier configuration.
void start(double timeout_seconds, int world_rank, std::function<void()> abort);
// Stops the monitor (waits are no longer timed).
void stop();

// Where the step is, for the report: set by the trainer ("forward/backward", "checkpoint save").
void set_position(int64_t iteration, const char* phase);
// " at iteration 3 (forward/backward)", for any error line of the rank; empty before the first
// step.
std::string describe_position();

// What one rank publishes for the watchdogs of the other ranks of its node.
inline constexpr int kArrivalSlots = 32;  // one per group kind a rank belongs to, and the world
struct ArrivalRecord {
  std::atomic<uint64_t> heartbeat{0};              // advanced by the monitor while it runs
  std::atomic<uint64_t> entered[kArrivalSlots]{};  // collectives entered, per group slot
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "records are shared between processes");

// Publishes this rank's record at `records[self]` and reads the others' (`records[i]` is world
// rank `world_ranks[i]`'s, all on this node); they must outlive detach_arrivals().
void attach_arrivals(std::vector<ArrivalRecord*> records, std::vector<int> world_ranks, int self);
void detach_arrivals();

// The group named `label` ("dp [0,2]") holds `world_ranks`; `slot` (< kArrivalSlots) is the
// same on all its ranks and different for each group a rank belongs to (its kind).
void register_group(const std::string& label, int slot, std::vector<int> world_ranks);
// This rank enters a collective on the group named `label` (every rank of the group issues its
// collectives in the same order); returns its sequence number in that group, 0 when not
// counted (no record attached, or the group is not registered).
uint64_t enter_collective(const std::string& label);

// A check the monitor makes at every poll while it runs, for failures that no wait reports before
// its timeout: NCCL's asynchronous errors (a peer gone, a broken link), after which the GPU's
// transfers wait forever. A message (what failed, naming the group and the device) ends the job
// at once, as an expired wait does. The check must not block. remove_probe takes the id.
using Probe = std::function<std::optional<std::string>()>;
uint64_t add_probe(Probe probe);
void remove_probe(uint64_t id);

// A blocking wait in progress: constructed before blocking, destroyed after. `what` names the
// operation ("all_reduce"), `group` the group ("dp [0,2]"; may be null), `sequence` what
// enter_collective returned for it (0: not a counted collective). Cheap when no monitor runs.
class BlockedScope {
 public:
  BlockedScope(const char* what, std::shared_ptr<const std::string> group,
               uint64_t sequence = 0);
  ~BlockedScope();
  BlockedScope(const BlockedScope&) = delete;
  BlockedScope& operator=(const BlockedScope&) = delete;

 private:
  uint64_t id_ = 0;  // 0: not registered (no monitor)
};

// Another rank of the waiting group as this rank's watchdog sees it.
struct PeerView {
  int world_rank = 0;
  bool visible = true;   // on this node: its record can be read
  bool running = true;   // its heartbeat advanced lately
  bool entered = true;   // it entered the collective waited for (true when not counted)
};
// "culprit: rank 3 (never entered this all_reduce; not running: stopped or dead)", or why none
// can be named (exposed for tests).
std::string describe_culprits(const std::string& what, const std::vector<PeerView>& peers);

// The report line for a wait of `waited_seconds` (exposed for tests).
std::string describe_expired_wait(int world_rank, double waited_seconds, double timeout_seconds,
                                  const std::string& what, const std::string& group,
                                  int64_t iteration, const std::string& phase,
                                  const std::string& culprits);

// The report line for a probe's message (exposed for tests).
std::string describe_probe_failure(int world_rank, const std::string& message, int64_t iteration,
                                   const std::string& phase);

}  // namespace moefold::watchdog
