// Preemption (a stop signal) and training.exit_duration_in_mins: train() stops at the next step
// boundary, saves a checkpoint there, and a resume from it continues bit-identically.
#include <gtest/gtest.h>

#include <atomic>
#include <csignal>

#include "checkpoint/checkpoint_dir.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

// Steps `first`.. of a trainer resumed from `save` equal the uninterrupted run's.
void expect_resume_matches(const Recipe& recipe, const std::string& save, int first,
                           const std::vector<StepRecord>& straight) {
  auto resumed = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE((*resumed)->load_checkpoint(save).ok());
  for (int i = first; i < static_cast<int>(straight.size()); ++i) {
    auto m = (*resumed)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(m->lm_loss, straight[i].lm_loss);
    EXPECT_EQ(m->aux_loss, straight[i].aux_loss);
    EXPECT_EQ(m->grad_norm, straight[i].grad_norm);
  }
}

TEST(Preemption, StopSignalSavesAtTheNextStepAndResumesBitIdentically) {
  const std::string dir = fresh_temp_dir("preempt-signal");
  const std::string prefix = write_tiny_dataset(dir, 300, 3);
  const Recipe recipe = tiny_recipe(prefix, dir + "/run",
                                    {"training.train_iters=6", "checkpoint.save=" + dir + "/save"});
  const std::vector<StepRecord> straight =
      run_steps(recipe, ParallelContext::single_process(), 6);
  {
    auto trainer = Trainer::create(recipe, ParallelContext::single_process());
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    const std::atomic<int> signal{SIGTERM};  // arrived during the first step
    (*trainer)->set_stop_signal(&signal);
    ASSERT_TRUE((*trainer)->train().ok());
    EXPECT_EQ((*trainer)->stop_reason(), "SIGTERM");
  }
  EXPECT_EQ(*read_latest(dir + "/save"), 1);
  expect_resume_matches(recipe, dir + "/save", 1, straight);
}

TEST(Preemption, ExitDurationStopsSavesAndResumes) {
  const std::string dir = fresh_temp_dir("preempt-duration");
  const std::string prefix = write_tiny_dataset(dir, 300, 4);
  const Recipe recipe = tiny_recipe(prefix, dir + "/run",
                                    {"training.train_iters=4", "checkpoint.save=" + dir + "/save",
                                     "checkpoint.save_interval=2"});
  const std::vector<StepRecord> straight =
      run_steps(recipe, ParallelContext::single_process(), 4);
  Recipe limited = recipe;
  limited.training.exit_duration_in_mins = 1e-9;  // passed once the first step is done
  {
    auto trainer = Trainer::create(limited, ParallelContext::single_process());
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->train().ok());
    EXPECT_NE((*trainer)->stop_reason().find("training.exit_duration_in_mins"), std::string::npos);
  }
  EXPECT_EQ(*read_latest(dir + "/save"), 1);
  expect_resume_matches(recipe, dir + "/save", 1, straight);
}

TEST(Preemption, WithoutASaveDirectoryStopsWithoutSaving) {
  const std::string dir = fresh_temp_dir("preempt-nosave");
  const std::string prefix = write_tiny_dataset(dir, 300, 5);
  auto trainer = Trainer::create(tiny_recipe(prefix, dir + "/run", {"training.train_iters=3"}),
                                 ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const std::atomic<int> signal{SIGUSR1};
  (*trainer)->set_stop_signal(&signal);
  ASSERT_TRUE((*trainer)->train().ok());
  EXPECT_EQ((*trainer)->stop_reason(), "SIGUSR1");
}

}  // namespace
}  // namespace moefold::testing
