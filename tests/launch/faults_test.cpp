// Faults met as a user meets them, through mpirun and the moefold binary:
// - a stopped rank (SIGSTOP) never hangs the job: the watchdog ends it within
//   parallel.distributed_timeout_minutes plus a few seconds, each live rank naming where it
//   waited and the stopped rank as the culprit;
// - a stop signal (to one rank, or SIGUSR1 to mpirun, which forwards it) saves a checkpoint at
//   the next step boundary and ends the job with exit code 0.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint_dir.h"
#include "tiny_run.h"
#include "trainer/config_schema.h"

namespace moefold::testing {
namespace {

using Clock = std::chrono::steady_clock;

// mpirun running the moefold binary, its output (stdout and stderr) read as it comes.
class Job {
 public:
  Job(int ranks, const std::string& args) {
    const std::string command =
        absl::StrCat("exec mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS=1 ",
                     "-np ", ranks, " ", MOEFOLD_BINARY, " ", args, " 2>&1");
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      ::setpgid(0, 0);  // its own process group, so the test can end everything it started
      ::execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Job() {
    if (pid_ > 0 && exit_code_ == kRunning) {  // still running: end what this test started
      for (pid_t rank : rank_pids_) ::kill(rank, SIGKILL);  // a stopped rank included
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
  }

  // Reads output until `text` appears or `seconds` pass; true if it appeared.
  bool wait_for_output(const std::string& text, double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(seconds));
    while (output_.find(text) == std::string::npos) {
      if (Clock::now() > deadline || !read_some(deadline)) return false;
    }
    return true;
  }
  // Reads to the end and reaps mpirun, at most `seconds`; returns the exit code (-1: killed by a
  // signal or still running at the deadline).
  int wait_exit(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(seconds));
    while (Clock::now() < deadline && read_some(deadline)) {
    }
    int status = 0;
    while (Clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_code_;
      }
      ::usleep(20000);
    }
    return -1;
  }
  // The pid of every rank (children of mpirun), by rank.
  std::map<int, pid_t> ranks() {
    std::map<int, pid_t> out;
    DIR* proc = ::opendir("/proc");
    while (dirent* entry = ::readdir(proc)) {
      const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (pid <= 0) continue;
      std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
      std::string pid_text, name, state;
      pid_t parent = 0;
      stat >> pid_text >> name >> state >> parent;
      if (parent != pid_) continue;
      std::ifstream environ(absl::StrCat("/proc/", pid, "/environ"));
      std::string all((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
      for (absl::string_view var : absl::StrSplit(all, '\0')) {
        if (absl::ConsumePrefix(&var, "OMPI_COMM_WORLD_RANK=")) {
          out[std::atoi(std::string(var).c_str())] = pid;
          rank_pids_.push_back(pid);
        }
      }
    }
    ::closedir(proc);
    return out;
  }
  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

 private:
  static constexpr int kRunning = -2;
  bool read_some(Clock::time_point deadline) {
    const int ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    pollfd fd{out_, POLLIN, 0};
    if (ms <= 0 || ::poll(&fd, 1, ms) <= 0) return false;
    char buffer[4096];
    const ssize_t n = ::read(out_, buffer, sizeof(buffer));
    if (n <= 0) return false;
    output_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int exit_code_ = kRunning;
  std::string output_;
  std::vector<pid_t> rank_pids_;
};

// A tiny recipe that would train for a long time, printing a line at iteration 1.
// The progress line of that first iteration: every rank is past start-up once it is printed
// (a watchdog line names groups as "[0,1]", so "[" alone is not a sign of training).
constexpr char kFirstProgressLine[] = "/1000000] ";
std::string long_run_config(const std::string& dir, const std::vector<std::string>& overrides) {
  const std::string prefix = write_tiny_dataset(dir, 200, 9);
  std::vector<std::string> all = {"training.train_iters=1000000", "logging.log_interval=1000000"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  std::ofstream(dir + "/long.yaml") << recipe_to_yaml(tiny_recipe(prefix, dir + "/run", all));
  return dir + "/long.yaml";
}

void expect_watchdog_ends_a_stopped_job(int ranks) {
  const std::string dir = fresh_temp_dir(absl::StrCat("watchdog-np", ranks));
  // 6 s: a live rank judges a peer "not running" once its heartbeat is half the timeout old, so
  // the timeout must outlast, by that half, any wait a CPU-starved peer caused before the stop.
  constexpr double kTimeoutMinutes = 0.1;
  const std::string config =
      long_run_config(dir, {absl::StrCat("parallel.distributed_timeout_minutes=", kTimeoutMinutes)});
  Job job(ranks, "train --config " + config);
  ASSERT_TRUE(job.wait_for_output(kFirstProgressLine, 120)) << job.output();
  const std::map<int, pid_t> pids = job.ranks();
  ASSERT_EQ(static_cast<int>(pids.size()), ranks) << job.output();
  const int stopped = ranks - 1;
  const auto start = Clock::now();
  ASSERT_EQ(::kill(pids.at(stopped), SIGSTOP), 0);
  const int exit_code = job.wait_exit(kTimeoutMinutes * 60 + 30);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_NE(exit_code, 0) << job.output();
  EXPECT_NE(exit_code, -1) << "the job did not end within the timeout + 30 s:\n" << job.output();
  // Every rank that could still speak said where it waited; the stopped one did not.
  const std::string& out = job.output();
  int reports = 0;
  for (int r = 0; r < stopped; ++r) {
    reports += out.find(absl::StrCat("moefold: watchdog: rank ", r, " waited")) != std::string::npos;
  }
  EXPECT_GE(reports, 1) << out;
  EXPECT_EQ(out.find(absl::StrCat("moefold: watchdog: rank ", stopped, " waited")),
            std::string::npos)
      << out;
  // A live rank names the stopped one outright: its heartbeat stopped (whether it entered the
  // collective before it stopped depends on where the signal caught it).
  const std::regex culprit(absl::StrCat("moefold: watchdog: rank [0-9]+ waited [^\n]*culprits?: ",
                                        "[^\n]*rank ", stopped,
                                        " \\([^)\n]*not running: stopped or dead\\)"));
  EXPECT_TRUE(std::regex_search(out, culprit)) << out;
  EXPECT_NE(out.find("parallel.distributed_timeout_minutes = 0.1) in "), std::string::npos);
  EXPECT_NE(out.find(" at iteration "), std::string::npos) << out;
  ::testing::Test::RecordProperty("seconds_to_end", std::to_string(seconds));
  std::printf("[watchdog np%d] the job ended %.1f s after the rank stopped\n", ranks, seconds);
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StrContains(line, "moefold: watchdog:")) {
      std::printf("  %s\n", std::string(line).c_str());
    }
  }
  std::filesystem::remove_all(dir);  // the run's metrics of thousands of steps: 200 MB
}

TEST(Faults, WatchdogEndsAJobWithAStoppedRank2) { expect_watchdog_ends_a_stopped_job(2); }
TEST(Faults, WatchdogEndsAJobWithAStoppedRank4) { expect_watchdog_ends_a_stopped_job(4); }

// The signal reaches one rank only (SIGTERM to rank 1) or every rank (SIGUSR1 to mpirun).
void expect_stop_signal_saves_and_exits_0(bool to_mpirun, int signal) {
  const std::string dir = fresh_temp_dir(absl::StrCat("preempt-", to_mpirun, "-", signal));
  const std::string config = long_run_config(dir, {"checkpoint.save=" + dir + "/save"});
  Job job(2, "train --config " + config);
  ASSERT_TRUE(job.wait_for_output(kFirstProgressLine, 120)) << job.output();
  if (to_mpirun) {
    ASSERT_EQ(::kill(job.pid(), signal), 0);
  } else {
    const std::map<int, pid_t> pids = job.ranks();
    ASSERT_EQ(pids.size(), 2u) << job.output();
    ASSERT_EQ(::kill(pids.at(1), signal), 0);
  }
  EXPECT_EQ(job.wait_exit(120), 0) << job.output();
  EXPECT_NE(job.output().find("moefold: stopping after iteration "), std::string::npos)
      << job.output();
  auto latest = read_latest(dir + "/save");
  ASSERT_TRUE(latest.ok()) << latest.status() << "\n" << job.output();
  EXPECT_GE(*latest, 1);
  std::filesystem::remove_all(dir);
}

TEST(Faults, SigtermToOneRankSavesAndExitsZero) { expect_stop_signal_saves_and_exits_0(false, SIGTERM); }
TEST(Faults, Sigusr1ToMpirunSavesAndExitsZero) { expect_stop_signal_saves_and_exits_0(true, SIGUSR1); }

}  // namespace
}  // namespace moefold::testing
