#include "parallel/watchdog.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"

namespace moefold::watchdog {
namespace {

using Clock = std::chrono::steady_clock;

struct Wait {
  const char* what;
  std::shared_ptr<const std::string> group;
  Clock::time_point since;
};

struct State {
  std::mutex mutex;
  std::condition_variable wake;
  bool running = false;
  bool stopping = false;
  double timeout_seconds = 0;
  int world_rank = 0;
  std::function<void()> abort;
  int64_t iteration = 0;
  std::string phase = "start-up";
  uint64_t next_id = 1;
  std::map<uint64_t, Wait> waits;  // in progress, by id
  std::thread monitor;
};

State& state() {
  static State* s = new State();  // never destroyed: waits may end during static destruction
  return *s;
}

void monitor_loop() {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  const auto poll = std::chrono::duration<double>(std::clamp(s.timeout_seconds / 20, 0.01, 1.0));
  Clock::time_point last = Clock::now();
  while (!s.stopping) {
    s.wake.wait_for(lock, poll);
    if (s.stopping) return;
    const Clock::time_point now = Clock::now();
    // A gap far beyond the poll interval means this process itself was not running (SIGSTOP,
    // a suspended VM): its waits did not last that long through anyone else's fault.
    const auto gap = now - last - std::chrono::duration_cast<Clock::duration>(poll);
    if (gap > std::chrono::seconds(1)) {
      for (auto& [id, wait] : s.waits) wait.since += gap;
    }
    last = now;
    for (const auto& [id, wait] : s.waits) {
      const double waited = std::chrono::duration<double>(now - wait.since).count();
      if (waited <= s.timeout_seconds) continue;
      const std::string line =
          describe_expired_wait(s.world_rank, waited, s.timeout_seconds, wait.what,
                                wait.group ? *wait.group : "", s.iteration, s.phase);
      std::fprintf(stderr, "%s\n", line.c_str());
      std::fflush(stderr);
      const std::function<void()> abort = s.abort;
      const double grace = std::min(2.0, s.timeout_seconds / 2);
      lock.unlock();
      // The other live ranks, blocked at about the same moment, report too before the abort
      // ends them: the rank without a line is the one that never arrived.
      std::this_thread::sleep_for(std::chrono::duration<double>(grace));
      abort();
      std::_Exit(1);  // in case the abort returned
    }
  }
}

}  // namespace

void start(double timeout_seconds, int world_rank, std::function<void()> abort) {
  stop();
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.timeout_seconds = timeout_seconds;
  s.world_rank = world_rank;
  s.abort = std::move(abort);
  s.stopping = false;
  s.running = true;
  s.monitor = std::thread(monitor_loop);
}

void stop() {
  State& s = state();
  std::thread monitor;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.running) return;
    s.stopping = true;
    s.running = false;
    monitor = std::move(s.monitor);
  }
  s.wake.notify_all();
  monitor.join();
}

void set_position(int64_t iteration, const char* phase) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.iteration = iteration;
  s.phase = phase;
}

BlockedScope::BlockedScope(const char* what, std::shared_ptr<const std::string> group) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.running) return;
  id_ = s.next_id++;
  s.waits.emplace(id_, Wait{what, std::move(group), Clock::now()});
}

BlockedScope::~BlockedScope() {
  if (id_ == 0) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.waits.erase(id_);
}

std::string describe_expired_wait(int world_rank, double waited_seconds, double timeout_seconds,
                                  const std::string& what, const std::string& group,
                                  int64_t iteration, const std::string& phase) {
  return absl::StrFormat(
      "moefold: watchdog: rank %d waited %.1f s (parallel.distributed_timeout_minutes = %g) in "
      "%s on %s at iteration %d, phase %s: a rank of that group never arrived (stopped, hung "
      "or dead; it is the rank that printed no such line); aborting the job",
      world_rank, waited_seconds, timeout_seconds / 60, what,
      group.empty() ? std::string("an unnamed group") : "group " + group, iteration, phase);
}

}  // namespace moefold::watchdog
