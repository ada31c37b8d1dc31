#include "parallel/logging.h"

#include <gtest/gtest.h>

namespace moefold {
namespace {

ParallelContext context_of_rank(int rank) {
  ParallelContext context = ParallelContext::single_process();
  context.coords.world_rank = rank;
  context.coords.world_size = 4;
  return context;
}

TEST(LoggingTest, InfoOnlyOnRankZeroUnlessAsked) {
  ::testing::internal::CaptureStdout();
  log_info(context_of_rank(0), "step ", 3, " loss ", 1.5);
  log_info(context_of_rank(3), "hidden");
  set_log_all_ranks(true);
  log_info(context_of_rank(3), "shown");
  set_log_all_ranks(false);
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "[rank 0] step 3 loss 1.5\n[rank 3] shown\n");
}

TEST(LoggingTest, WarningsOnEveryRank) {
  ::testing::internal::CaptureStderr();
  log_warning(context_of_rank(2), "slow rank");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "[rank 2] warning: slow rank\n");
}

}  // namespace
}  // namespace moefold
