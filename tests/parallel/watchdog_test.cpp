// The watchdog's culprit: named from the arrival records of the waiting group's other ranks.
#include "parallel/watchdog.h"

#include <gtest/gtest.h>

namespace moefold::watchdog {
namespace {

PeerView peer(int rank, bool running, bool entered, bool visible = true) {
  PeerView p;
  p.world_rank = rank;
  p.running = running;
  p.entered = entered;
  p.visible = visible;
  return p;
}

TEST(WatchdogCulprit, NamesAStoppedRankThatNeverEntered) {
  EXPECT_EQ(describe_culprits("all_reduce", {peer(0, true, true), peer(3, false, false)}),
            "culprit: rank 3 (never entered this all_reduce; not running: stopped or dead)");
}

TEST(WatchdogCulprit, NamesARunningRankThatNeverEntered) {
  EXPECT_EQ(describe_culprits("all_gather", {peer(1, true, false), peer(2, true, true)}),
            "culprit: rank 1 (never entered this all_gather)");
}

TEST(WatchdogCulprit, NamesAStoppedRankInsideTheCollective) {
  EXPECT_EQ(describe_culprits("broadcast", {peer(2, false, true)}),
            "culprit: rank 2 (not running: stopped or dead)");
}

TEST(WatchdogCulprit, NamesEveryCulprit) {
  EXPECT_EQ(describe_culprits("barrier", {peer(1, true, false), peer(2, false, true)}),
            "culprits: rank 1 (never entered this barrier), rank 2 (not running: stopped or dead)");
}

TEST(WatchdogCulprit, SaysWhenTheCulpritCannotBeSeen) {
  EXPECT_EQ(describe_culprits("all_reduce", {peer(1, true, true), peer(5, true, true, false)}),
            "culprit not visible from this rank: the group's ranks on this node entered it and "
            "are running; see the reports of the ranks on other nodes");
  EXPECT_EQ(describe_culprits("all_reduce", {peer(1, true, true)}),
            "culprit unknown: every rank of the group entered it and is running");
}

TEST(WatchdogCulprit, TheReportIsOneLineNamingEverything) {
  const std::string line = describe_expired_wait(
      0, 3.04, 3, "all_reduce", "dp [0,1]", 12, "gradient reduction",
      describe_culprits("all_reduce", {peer(1, false, false)}));
  EXPECT_EQ(line,
            "moefold: watchdog: rank 0 waited 3.0 s (parallel.distributed_timeout_minutes = "
            "0.05) in all_reduce on group dp [0,1] at iteration 12, phase gradient reduction; "
            "culprit: rank 1 (never entered this all_reduce; not running: stopped or dead); "
            "aborting the job");
}

// A probe's failure (an asynchronous NCCL error) is reported as one line too.
TEST(WatchdogProbe, TheReportIsOneLineNamingEverything) {
  EXPECT_EQ(describe_probe_failure(3,
                                   "NCCL reported an asynchronous error on group dp [0,2] "
                                   "(cuda:1): remote process exited or there was a network error",
                                   7, "forward/backward"),
            "moefold: watchdog: rank 3: NCCL reported an asynchronous error on group dp [0,2] "
            "(cuda:1): remote process exited or there was a network error, at iteration 7, phase "
            "forward/backward; aborting the job");
}

}  // namespace
}  // namespace moefold::watchdog
