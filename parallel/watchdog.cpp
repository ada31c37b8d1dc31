#include "parallel/watchdog.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace moefold::watchdog {
namespace {

using Clock = std::chrono::steady_clock;

struct Wait {
  const char* what;
  std::shared_ptr<const std::string> group;
  uint64_t sequence;  // of a counted collective; 0: not counted
  Clock::time_point since;
};

struct Group {
  int slot;
  std::vector<int> world_ranks;
};

// The node's arrival records, and when each one's heartbeat last moved as this monitor saw it.
struct Arrivals {
  std::vector<ArrivalRecord*> records;  // by node index
  std::vector<int> world_ranks;         // by node index
  int self = -1;
  std::vector<uint64_t> last_beat;
  std::vector<Clock::time_point> last_change;
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
  std::map<uint64_t, Probe> probes;
  std::map<std::string, Group> groups;  // by label
  Arrivals arrivals;
  std::thread monitor;
};

State& state() {
  static State* s = new State();  // never destroyed: waits may end during static destruction
  return *s;
}

// Advances this rank's heartbeat and notes whose heartbeats moved. Under the state's lock.
void watch_heartbeats(State& s, Clock::time_point now) {
  Arrivals& a = s.arrivals;
  if (a.self < 0) return;
  a.records[a.self]->heartbeat.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < a.records.size(); ++i) {
    const uint64_t beat = a.records[i]->heartbeat.load(std::memory_order_relaxed);
    if (beat != a.last_beat[i]) {
      a.last_beat[i] = beat;
      a.last_change[i] = now;
    }
  }
}

// The other ranks of `wait`'s group as the arrival records show them. Under the state's lock.
std::vector<PeerView> view_peers(const State& s, const Wait& wait, Clock::time_point now,
                                 Clock::duration stale) {
  const Arrivals& a = s.arrivals;
  const auto group = wait.group ? s.groups.find(*wait.group) : s.groups.end();
  // An unregistered group (an HDF5 transfer's): every rank of the node might be at fault.
  const std::vector<int>& ranks = group != s.groups.end() ? group->second.world_ranks
                                                           : a.world_ranks;
  std::vector<PeerView> peers;
  for (int rank : ranks) {
    if (rank == s.world_rank) continue;
    PeerView peer;
    peer.world_rank = rank;
    const auto at = std::find(a.world_ranks.begin(), a.world_ranks.end(), rank);
    peer.visible = a.self >= 0 && at != a.world_ranks.end();
    if (peer.visible) {
      const size_t i = static_cast<size_t>(at - a.world_ranks.begin());
      peer.running = now - a.last_change[i] <= stale;
      if (wait.sequence > 0 && group != s.groups.end()) {
        peer.entered = a.records[i]->entered[group->second.slot].load(std::memory_order_relaxed) >=
                       wait.sequence;
      }
    }
    peers.push_back(peer);
  }
  return peers;
}

// Prints the report line and ends the job, after a grace period in which the other live ranks,
// blocked at about the same moment, report too. Called under the state's lock.
[[noreturn]] void end_job(State& s, std::unique_lock<std::mutex>& lock, const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  const std::function<void()> abort = s.abort;
  const double grace = std::min(2.0, s.timeout_seconds / 2);
  lock.unlock();
  std::this_thread::sleep_for(std::chrono::duration<double>(grace));
  abort();
  std::_Exit(1);  // in case the abort returned
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
    watch_heartbeats(s, now);
    for (const auto& [id, wait] : s.waits) {
      const double waited = std::chrono::duration<double>(now - wait.since).count();
      if (waited <= s.timeout_seconds) continue;
      // A live rank's monitor beats every poll; one silent for half the timeout is not running.
      const auto stale = std::chrono::duration_cast<Clock::duration>(
          std::max(3 * poll, std::chrono::duration<double>(s.timeout_seconds / 2)));
      const std::string line = describe_expired_wait(
          s.world_rank, waited, s.timeout_seconds, wait.what, wait.group ? *wait.group : "",
          s.iteration, s.phase, describe_culprits(wait.what, view_peers(s, wait, now, stale)));
      end_job(s, lock, line);
    }
    for (const auto& [id, probe] : s.probes) {
      if (const std::optional<std::string> failure = probe()) {
        end_job(s, lock, describe_probe_failure(s.world_rank, *failure, s.iteration, s.phase));
      }
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

std::string describe_position() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.iteration == 0) return "";
  return absl::StrCat(" at iteration ", s.iteration, " (", s.phase, ")");
}

void attach_arrivals(std::vector<ArrivalRecord*> records, std::vector<int> world_ranks,
                     int self) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  Arrivals& a = s.arrivals;
  a.last_beat.assign(records.size(), 0);
  a.last_change.assign(records.size(), Clock::now());
  a.records = std::move(records);
  a.world_ranks = std::move(world_ranks);
  a.self = self;
}

void detach_arrivals() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.arrivals = Arrivals{};
}

void register_group(const std::string& label, int slot, std::vector<int> world_ranks) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.groups[label] = Group{slot, std::move(world_ranks)};
}

uint64_t enter_collective(const std::string& label) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.arrivals.self < 0) return 0;
  const auto group = s.groups.find(label);
  if (group == s.groups.end()) return 0;
  return s.arrivals.records[s.arrivals.self]->entered[group->second.slot].fetch_add(
             1, std::memory_order_relaxed) +
         1;
}

uint64_t add_probe(Probe probe) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const uint64_t id = s.next_id++;
  s.probes.emplace(id, std::move(probe));
  return id;
}

void remove_probe(uint64_t id) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.probes.erase(id);
}

BlockedScope::BlockedScope(const char* what, std::shared_ptr<const std::string> group,
                           uint64_t sequence) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.running) return;
  id_ = s.next_id++;
  s.waits.emplace(id_, Wait{what, std::move(group), sequence, Clock::now()});
}

BlockedScope::~BlockedScope() {
  if (id_ == 0) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.waits.erase(id_);
}

std::string describe_culprits(const std::string& what, const std::vector<PeerView>& peers) {
  std::vector<std::string> culprits;
  bool hidden = false;
  for (const PeerView& peer : peers) {
    hidden = hidden || !peer.visible;
    if (!peer.visible || (peer.running && peer.entered)) continue;
    std::vector<std::string> why;
    if (!peer.entered) why.push_back("never entered this " + what);
    if (!peer.running) why.push_back("not running: stopped or dead");
    culprits.push_back(absl::StrCat("rank ", peer.world_rank, " (", absl::StrJoin(why, "; "), ")"));
  }
  if (culprits.size() == 1) return "culprit: " + culprits[0];
  if (!culprits.empty()) return "culprits: " + absl::StrJoin(culprits, ", ");
  if (hidden) {
    return "culprit not visible from this rank: the group's ranks on this node entered it and "
           "are running; see the reports of the ranks on other nodes";
  }
  return "culprit unknown: every rank of the group entered it and is running";
}

std::string describe_expired_wait(int world_rank, double waited_seconds, double timeout_seconds,
                                  const std::string& what, const std::string& group,
                                  int64_t iteration, const std::string& phase,
                                  const std::string& culprits) {
  return absl::StrFormat(
      "moefold: watchdog: rank %d waited %.1f s (parallel.distributed_timeout_minutes = %g) in "
      "%s on %s at iteration %d, phase %s; %s; aborting the job",
      world_rank, waited_seconds, timeout_seconds / 60, what,
      group.empty() ? std::string("an unnamed group") : "group " + group, iteration, phase,
      culprits);
}

std::string describe_probe_failure(int world_rank, const std::string& message, int64_t iteration,
                                   const std::string& phase) {
  return absl::StrFormat(
      "moefold: watchdog: rank %d: %s, at iteration %d, phase %s; aborting the job", world_rank,
      message, iteration, phase);
}

}  // namespace moefold::watchdog
