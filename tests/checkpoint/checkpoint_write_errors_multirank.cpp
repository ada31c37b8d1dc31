// A write error on some ranks during a collective save (a full disk, a file size limit, an EIO
// at a write or at the sync) reaches every rank at the same point: the save fails on all of them
// with one line naming the rank, the file and the error, nothing hangs, no partial save is left
// behind and the previous checkpoint stays loadable.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "model/model.h"
#include "tensor/check.h"
#include "tests/checkpoint/write_faults.h"

namespace moefold {
namespace {
namespace fs = std::filesystem;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// A fresh directory, the same on every rank (rank 0's pid names it).
std::string shared_temp_dir(const std::string& tag) {
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string dir = (fs::path(::testing::TempDir()) /
                           ("moefold_ckpt_fault_" + std::to_string(pid) + "_" + tag))
                              .string();
  if (world_rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.ffn_hidden_size = 48;
  c.vocab_size = 256;
  c.make_vocab_size_divisible_by = 16;
  c.seq_length = 8;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 16;
  c.moe.moe_layer_pattern = {0, 1};
  return c;
}

struct Trained {
  explicit Trained(const ParallelContext& ctx) : model(tiny_config(), ctx) {
    model.init_parameters(5);
    std::vector<OptimTensor> tensors;
    for (Parameter* p : model.parameters()) {
      tensors.push_back({p->name(), p->value, p->grad, p->weight_decay});
      p->grad.fill(0.01f);
    }
    adam = std::make_unique<AdamW>(OptimizerConfig{}, tensors);
    adam->step(1e-3);
  }
  absl::StatusOr<CheckpointIoStats> save(const std::string& dir, int64_t iteration,
                                         const ParallelContext& ctx) {
    return save_checkpoint(dir, {iteration, iteration * 4, "recipe"}, model.registry(),
                           adam.get(), ctx, tiny_config());
  }
  Model model;
  std::unique_ptr<AdamW> adam;
};

// Every rank must hold the same failed status: one line naming a rank and the file.
void expect_agreed_failure(const absl::Status& status, const std::vector<std::string>& parts) {
  ASSERT_FALSE(status.ok());
  const std::string message(status.message());
  if (world_rank() == 0) std::printf("[agreed error] %s\n", message.c_str());  // the fault table
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.rfind("rank ", 0), 0u) << message;
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
  // The same text on every rank.
  int64_t length = static_cast<int64_t>(message.size());
  int64_t lengths[2] = {length, -length};
  MPI_Allreduce(MPI_IN_PLACE, lengths, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(lengths[0], -lengths[1]) << "ranks disagree on the error: " << message;
}

// After a failed save of `failed`: `latest` still names `kept`, which loads bit-exactly, and no
// staging directory is left.
void expect_previous_intact(const std::string& dir, int64_t kept, int64_t failed,
                            Trained& saved, const ParallelContext& ctx) {
  EXPECT_EQ(*read_latest(dir), kept);
  EXPECT_FALSE(fs::exists(fs::path(dir) / (iteration_dir_name(failed) + ".tmp")));
  EXPECT_FALSE(fs::exists(fs::path(dir) / iteration_dir_name(failed)));
  Trained restored(ctx);
  for (Parameter* p : restored.model.parameters()) p->value.fill(7.0f);
  auto state = load_checkpoint(dir, restored.model.registry(), restored.adam.get(), ctx,
                               tiny_config());
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->iteration, kept);
  const auto want = saved.model.parameters();
  const auto got = restored.model.parameters();
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(want[i]->value.to_vector(), got[i]->value.to_vector()) << want[i]->name();
  }
}

// A tmpfs just large enough for one checkpoint: the second save runs out of space (ENOSPC).
TEST(CheckpointWriteErrors, FullDiskFailsOnEveryRankAndKeepsThePreviousCheckpoint) {
  const ParallelContext ctx = ParallelContext::create(ParallelConfig{}, MPI_COMM_WORLD).value();
  Trained trained(ctx);
  const std::string probe = shared_temp_dir("probe");
  auto first = trained.save(probe, 1, ctx);
  ASSERT_TRUE(first.ok()) << first.status();

  const std::string dir = shared_temp_dir("tmpfs");
  int mounted = 0;
  if (world_rank() == 0) {
    // Room for one checkpoint and a half, plus the metadata allowance a save reserves for the
    // optimizer file (64 KiB + 2 KiB per tensor and moment): the first save fits, the second
    // cannot.
    const int64_t reserve = (64 << 10) + 4096 * int64_t(trained.model.parameters().size());
    const int64_t bytes = ((first->bytes * 3 / 2 + reserve) / 4096 + 4) * 4096;
    const std::string options = "size=" + std::to_string(bytes);
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0 ? 1 : 0;
  }
  MPI_Bcast(&mounted, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!mounted) {
    if (world_rank() == 0) fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here (not root?); the file-size-limit test covers "
                    "the same path";
  }
  ASSERT_TRUE(trained.save(dir, 1, ctx).ok());
  const absl::Status status = trained.save(dir, 2, ctx).status();
  expect_agreed_failure(status, {"iter_0000002.tmp", "No space left on device"});
  expect_previous_intact(dir, 1, 2, trained, ctx);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) {
    ::umount(dir.c_str());
    fs::remove_all(dir);
    fs::remove_all(probe);
  }
}

// RLIMIT_FSIZE on every rank: whichever rank writes beyond the limit gets EFBIG (File too large)
// mid-save while the others succeed; no mount needed, so this runs anywhere.
TEST(CheckpointWriteErrors, FileSizeLimitFailsOnEveryRankAndKeepsThePreviousCheckpoint) {
  const ParallelContext ctx = ParallelContext::create(ParallelConfig{}, MPI_COMM_WORLD).value();
  Trained trained(ctx);
  const std::string dir = shared_temp_dir("fsize");
  auto first = trained.save(dir, 1, ctx);
  ASSERT_TRUE(first.ok()) << first.status();
  const int64_t model_bytes =
      static_cast<int64_t>(fs::file_size(fs::path(first->dir) / kModelFile));

  std::signal(SIGXFSZ, SIG_IGN);  // the write then fails with EFBIG instead of killing us
  rlimit before{};
  ::getrlimit(RLIMIT_FSIZE, &before);
  rlimit limited = before;
  limited.rlim_cur = static_cast<rlim_t>(model_bytes / 2);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limited), 0);
  const absl::Status status = trained.save(dir, 2, ctx).status();
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &before), 0);
  std::signal(SIGXFSZ, SIG_DFL);

  expect_agreed_failure(status, {"iter_0000002.tmp/model.h5", "File too large"});
  expect_previous_intact(dir, 1, 2, trained, ctx);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove_all(dir);
}

// An EIO injected at the system call on one rank only (write_faults.h) while the second save
// writes `file`, after its space was reserved: the save fails on every rank with one line naming
// that rank, the file and the errno; nothing hangs and the first checkpoint stays loadable.
void expect_injected_eio_fails_cleanly(const std::string& tag, int failing_rank,
                                       const std::string& file, test::FaultCall call,
                                       const std::string& what) {
  const ParallelContext ctx = ParallelContext::create(ParallelConfig{}, MPI_COMM_WORLD).value();
  Trained trained(ctx);
  const std::string dir = shared_temp_dir(tag);
  ASSERT_TRUE(trained.save(dir, 1, ctx).ok());
  const std::string target = iteration_dir_name(2) + ".tmp/" + file;
  if (world_rank() == failing_rank) test::arm_write_fault(target.c_str(), call, EIO);
  const absl::Status status = trained.save(dir, 2, ctx).status();
  const int64_t injected = test::injected_write_faults();
  test::disarm_write_faults();
  if (world_rank() == failing_rank) {
    EXPECT_GT(injected, 0) << "no call on " << target << " failed";
  }
  expect_agreed_failure(status, {"rank " + std::to_string(failing_rank) + ": ", target, what,
                                 "Input/output error"});
  expect_previous_intact(dir, 1, 2, trained, ctx);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove_all(dir);
}

int last_rank() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size - 1;
}

TEST(CheckpointWriteErrors, EioWritingTensorDataOnTheLastRank) {
  expect_injected_eio_fails_cleanly("eio_data", last_rank(), kOptimFile, test::FaultCall::kWrite,
                                    "cannot write tensor 'exp_avg/");
}

TEST(CheckpointWriteErrors, EioAtTheSyncOfWrittenTensorsOnRankOne) {
  expect_injected_eio_fails_cleanly("eio_sync", 1, kModelFile, test::FaultCall::kSync,
                                    "cannot sync the written tensors: Input/output error (EIO 5)");
}

// Rank 0 alone writes each file's HDF5 layout (its metadata), after the space reservation.
TEST(CheckpointWriteErrors, EioWritingTheLayoutOnRankZero) {
  expect_injected_eio_fails_cleanly("eio_layout", 0, kOptimFile, test::FaultCall::kWrite,
                                    "cannot write the HDF5 layout: Input/output error (EIO 5)");
}

}  // namespace
}  // namespace moefold
