// Watchdog: every blocking wait on communication has a deadline (Megatron's
// --distributed-timeout-minutes). A monitor thread watches the waits in progress; when one has
// lasted longer than the timeout, the rank prints one line naming what it waited for (the
// collective or p2p, the group's kind and ranks), its own rank, the iteration and the phase of
// the step, then ends the job through the installed abort (MPI_Abort): a hung job always ends,
// and every rank that can still speak says where it waited. The rank with no such line is the
// one that never arrived.
//
// Process-wide on purpose (like a flight recorder): waits happen deep inside communicators that
// know nothing of the trainer, and the report must reach them without being passed down.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace moefold::watchdog {

// Starts the monitor: waits longer than `timeout_seconds` (> 0) end the process through `abort`
// after the report line. Replaces an earlier configuration.
void start(double timeout_seconds, int world_rank, std::function<void()> abort);
// Stops the monitor (waits are no longer timed).
void stop();

// Where the step is, for the report: set by the trainer ("forward/backward", "checkpoint save").
void set_position(int64_t iteration, const char* phase);

// A blocking wait in progress: constructed before blocking, destroyed after. `what` names the
// operation ("all_reduce"), `group` the group ("dp [0,2]"; may be null). Cheap when no monitor
// runs.
class BlockedScope {
 public:
  BlockedScope(const char* what, std::shared_ptr<const std::string> group);
  ~BlockedScope();
  BlockedScope(const BlockedScope&) = delete;
  BlockedScope& operator=(const BlockedScope&) = delete;

 private:
  uint64_t id_ = 0;  // 0: not registered (no monitor)
};

// The report line for a wait of `waited_seconds` (exposed for tests).
std::string describe_expired_wait(int world_rank, double waited_seconds, double timeout_seconds,
                                  const std::string& what, const std::string& group,
                                  int64_t iteration, const std::string& phase);

}  // namespace moefold::watchdog
