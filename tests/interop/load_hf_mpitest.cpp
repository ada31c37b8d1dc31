// The round trip across layouts: a model trained a few steps in one process, saved and exported
// to mixtral safetensors, is loaded with --load-hf's loader under TP 2, EP 2, PP 2 (2 ranks),
// TP 2 x EP 2 and EP 2 with FSSDP (4 ranks). Every
// rank's parameter slices are bit-identical to the checkpoint's, and the loss on a fixed batch
// (and on the validation batches) is exactly the loss of the same layout loading the moefold
// checkpoint, and the one-process loss to float32 tolerance.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_file.h"
#include "hf_test_util.h"
#include "interop/export_hf.h"
#include "interop/load_hf.h"
#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

double fixed_batch_loss(Model& model) {
  const MicroBatchStats stats = model.evaluate(fixed_batch());
  return stats.host_lm_loss_sum() / stats.loss_mask_sum;
}

class LoadHfLayouts : public ::testing::TestWithParam<InvarianceLayout> {
 protected:
  static void SetUpTestSuite() {
    int pid = static_cast<int>(::getpid());
    MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
    dir_ = (std::filesystem::temp_directory_path() /
            ("moefold-load-hf-np" + std::to_string(world_size()) + "-" + std::to_string(pid)))
               .string();
    if (world_rank() == 0) {
      std::filesystem::remove_all(dir_);
      ckpt_ = train_and_save(dir_, mixtral_overrides(), 3);
      auto exported = export_hf({ckpt_, HfFormat::kMixtral, dir_ + "/hf", 30'000});
      EXPECT_TRUE(exported.ok()) << exported.status();
    }
    ckpt_ = dir_ + "/ckpt";
    MPI_Barrier(MPI_COMM_WORLD);
  }
  static inline std::string dir_, ckpt_;
};

TEST_P(LoadHfLayouts, SlicesBitIdenticalAndSameLoss) {
  const InvarianceLayout& layout = GetParam();
  if (world_size() != layout.world) GTEST_SKIP() << layout.name << " runs on " << layout.world;
  std::vector<std::string> overrides = mixtral_overrides();
  overrides.insert(overrides.end(), layout.parallel.begin(), layout.parallel.end());
  const std::string run = dir_ + "/" + layout.name + "-rank" + std::to_string(world_rank());
  const Recipe recipe = tiny_recipe(dir_ + "/data/tiny_text_document", run,
                                    [&] {
                                      auto o = overrides;
                                      o.push_back("training.seed=99");  // another init
                                      return o;
                                    }());
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto from_hf = Trainer::create(recipe, *ctx);
  ASSERT_TRUE(from_hf.ok()) << from_hf.status();
  LoadHfStats stats;
  const absl::Status loaded = load_hf_checkpoint(dir_ + "/hf", (*from_hf)->model().registry(),
                                                 (*from_hf)->recipe().model, &stats);
  ASSERT_TRUE(loaded.ok()) << loaded;

  // Each slice against the checkpoint's global tensor, read here with plain serial HDF5.
  auto file = Hdf5File::open(*resolve_checkpoint_dir(ckpt_) + "/model.h5", MPI_COMM_NULL);
  ASSERT_TRUE(file.ok()) << file.status();
  int64_t local_bytes = 0;
  for (const auto& p : (*from_hf)->model().registry().parameters()) {
    const TensorLayout& l = p->layout;
    std::vector<float> want(static_cast<size_t>(l.local_numel()));
    HyperslabF32 box{l.local_offset, l.local_shape, want.data()};
    ASSERT_TRUE(file->read(l.name, &box).ok()) << l.name;
    EXPECT_EQ(std::memcmp(want.data(), p->value.data(), want.size() * 4), 0) << l.name;
    local_bytes += l.local_numel() * 4;
  }
  EXPECT_EQ(stats.bytes_read, local_bytes) << "each rank reads its own slices only";

  auto from_ckpt = Trainer::create(recipe, *ctx);
  ASSERT_TRUE(from_ckpt.ok());
  ASSERT_TRUE((*from_ckpt)->load_checkpoint(ckpt_, /*model_only=*/true).ok());
  std::vector<std::string> one_overrides = mixtral_overrides();
  one_overrides.push_back("training.seed=99");  // the same validation batches as `recipe`
  const Recipe one_recipe =
      tiny_recipe(dir_ + "/data/tiny_text_document", run + "-one", one_overrides);
  auto one = Trainer::create(one_recipe, ParallelContext::single_process());
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE((*one)->load_checkpoint(ckpt_, /*model_only=*/true).ok());

  if (ctx->coords.pp_size == 1) {  // the fixed batch through Model::evaluate (one stage)
    const double hf_loss = fixed_batch_loss((*from_hf)->model());
    EXPECT_EQ(hf_loss, fixed_batch_loss((*from_ckpt)->model()));
    EXPECT_NEAR(hf_loss, fixed_batch_loss((*one)->model()), 1e-5 * hf_loss);
  }
  // The validation batches through the trainer's schedule (every layout, pipelines included).
  auto hf_eval = (*from_hf)->evaluate(2), ckpt_eval = (*from_ckpt)->evaluate(2),
       one_eval = (*one)->evaluate(2);
  ASSERT_TRUE(hf_eval.ok() && ckpt_eval.ok() && one_eval.ok());
  EXPECT_EQ(hf_eval->loss, ckpt_eval->loss);
  EXPECT_NEAR(hf_eval->loss, one_eval->loss, 1e-5 * one_eval->loss);
}

std::vector<std::string> sizes(int tp, int ep) {
  return {"parallel.tensor_model_parallel_size=" + std::to_string(tp),
          "parallel.expert_model_parallel_size=" + std::to_string(ep),
          "parallel.expert_tensor_parallel_size=1"};
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, LoadHfLayouts,
    ::testing::Values(InvarianceLayout{"tp2", 2, {}, sizes(2, 1)},
                      InvarianceLayout{"ep2", 2, {}, sizes(1, 2)},
                      InvarianceLayout{"pp2", 2, {}, {"parallel.pipeline_model_parallel_size=2"}},
                      InvarianceLayout{"tp2_ep2", 4, {}, sizes(2, 2)},
                      InvarianceLayout{"ep2_fssdp", 4, {},
                                       {"parallel.expert_model_parallel_size=2",
                                        "parallel.moe_fssdp=true"}}),
    [](const ::testing::TestParamInfo<InvarianceLayout>& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::testing
