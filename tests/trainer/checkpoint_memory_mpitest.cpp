// Checkpoint memory with the distributed optimizer is ZeRO-sized: saving and loading allocate
// no full-size Adam state on any rank (each rank writes and reads only the slices it owns). The
// tensor allocator's high-water mark during the call, over the rank's Adam state, is printed
// (the figure the issue asks for) and bounded.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

// The process's resident set (kB) now and at its peak since reset_peak_rss(): VmRSS and VmHWM.
double status_kb(const char* key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key));
  }
  return 0;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

TEST(CheckpointMemory, DistributedOptimizerSaveAndLoadAllocateNoFullAdamState) {
  const std::string dir = shared_tiny_corpus("ckpt-memory", 17);
  const std::string run = dir + "/rank" + std::to_string(world_rank());
  const Recipe recipe = tiny_recipe(
      tiny_prefix(dir), run,
      {"parallel.use_distributed_optimizer=true", "model.hidden_size=128",
       "model.ffn_hidden_size=256", "moe.moe_ffn_hidden_size=128", "moe.num_experts=8",
       "checkpoint.save=" + dir + "/save"});
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto trainer = Trainer::create(recipe, *ctx);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->train_step(0).ok());
  const double adam_bytes = static_cast<double>((*trainer)->data_parallel().optimizer_state_bytes());
  double parameter_bytes = 0;
  for (const Parameter* p : (*trainer)->model().parameters()) parameter_bytes += p->value.nbytes();

  MemoryStats::reset_peak();
  reset_peak_rss();
  const double rss_before = status_kb("VmRSS:");
  double before = static_cast<double>(MemoryStats::current_bytes());
  ASSERT_TRUE((*trainer)->save_checkpoint(1).ok());
  double extra[2] = {static_cast<double>(MemoryStats::peak_bytes()) - before, 0};
  double rss_extra = status_kb("VmHWM:") - rss_before;
  MPI_Allreduce(MPI_IN_PLACE, &rss_extra, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MemoryStats::reset_peak();
  before = static_cast<double>(MemoryStats::current_bytes());
  ASSERT_TRUE((*trainer)->load_checkpoint(dir + "/save").ok());
  extra[1] = static_cast<double>(MemoryStats::peak_bytes()) - before;
  double worst[2] = {extra[0], extra[1]};
  MPI_Allreduce(MPI_IN_PLACE, worst, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (world_rank() == 0) {
    std::printf("[checkpoint memory] DP %d: parameters %.0f KiB, this rank's Adam state %.0f KiB; "
                "extra tensor memory during save %.0f KiB, during load %.0f KiB; resident set "
                "growth during save %.0f KiB (max over ranks)\n",
                world_size(), parameter_bytes / 1024, adam_bytes / 1024, worst[0] / 1024,
                worst[1] / 1024, rss_extra);
  }
  // A full-size Adam state would be 2 × the parameter bytes.
  EXPECT_LT(worst[0], 0.25 * parameter_bytes);
  EXPECT_LT(worst[1], 0.25 * parameter_bytes);
}

}  // namespace
}  // namespace moefold::testing
