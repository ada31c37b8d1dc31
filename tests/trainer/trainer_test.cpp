// Single-process trainer behaviour: it learns, evaluates, and stops with one clear line on bad
// input (vocabulary mismatch, out-of-vocabulary data, unsupported layouts, non-finite losses).
#include "trainer/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "data/indexed_dataset.h"
#include "tiny_run.h"

namespace moefold::testing {
namespace {

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fresh_temp_dir("trainer-test");
    prefix_ = write_tiny_dataset(dir_, 300, 5);
  }
  static inline std::string dir_, prefix_;
};

TEST_F(TrainerTest, LossFallsAndEvaluationIsFinite) {
  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/run", {"training.train_iters=12"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto before = (*trainer)->evaluate(2);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->tokens, 0);
  EXPECT_NEAR(before->loss, std::log(384.0), 0.5);  // near uniform over the padded vocabulary
  std::vector<double> losses;
  for (int i = 0; i < 12; ++i) {
    auto m = (*trainer)->train_step(i);
    ASSERT_TRUE(m.ok()) << m.status();
    losses.push_back(m->lm_loss);
    EXPECT_GT(m->grad_norm, 0);
    ASSERT_EQ(m->moe.size(), 1u);  // layer 1 is the MoE layer
    int64_t routed = 0;
    for (int64_t c : m->moe[0].tokens_per_expert) routed += c;
    EXPECT_EQ(routed, 8 * 16 * 2);  // every token of the global batch, top-2
  }
  // Random bytes: the best possible loss is about log(256) = 5.55, from log(384) = 5.95.
  EXPECT_LT(losses.back(), losses.front() - 0.15);
  auto after = (*trainer)->evaluate(2);
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->loss, before->loss);
}

TEST_F(TrainerTest, VocabularySmallerThanTokenizerIsRejected) {
  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/run", {"model.vocab_size=200"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("model.vocab_size 200 is smaller than the byte"),
            std::string::npos)
      << trainer.status();
}

TEST_F(TrainerTest, CudaWithoutACudaBackendNamesTheRankAndHost) {
  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/run", {"training.device=cuda"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_FALSE(trainer.ok());
  const std::string message(trainer.status().message());
  EXPECT_NE(message.find("training.device: cuda, but no CUDA device backend is available on rank "
                         "0 (host "),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
}

TEST_F(TrainerTest, OutOfVocabularyTokenNamesTheFile) {
  const std::string prefix = dir_ + "/bad_ids";
  auto builder = IndexedDatasetBuilder::create(prefix, IndexedDType::kUInt16);
  ASSERT_TRUE(builder.ok());
  for (int d = 0; d < 200; ++d) {
    std::vector<int32_t> ids(40, 7);
    if (d == 150) ids[3] = 1000;  // one document beyond the byte vocabulary, drawn late or never
    ASSERT_TRUE(builder->add_item(ids).ok());
    builder->end_document();
  }
  ASSERT_TRUE(builder->finalize().ok());
  const Recipe recipe = tiny_recipe(prefix, dir_ + "/run");
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_FALSE(trainer.ok());  // found when the data is opened, before any step
  EXPECT_NE(trainer.status().message().find("bad_ids.bin: token id 1000 (sequence 150, token 3)"),
            std::string::npos)
      << trainer.status();
}

TEST_F(TrainerTest, LayoutTheModelCannotTakeSaysSo) {
  const Recipe recipe = tiny_recipe(prefix_, dir_ + "/run");
  ParallelContext ctx = ParallelContext::single_process();
  ctx.config.pipeline_model_parallel_size = 4;  // the tiny model has 2 layers
  ctx.coords.pp_size = 4;
  auto trainer = Trainer::create(recipe, ctx);
  ASSERT_FALSE(trainer.ok());
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(trainer.status().message().find("pipeline_model_parallel_size 4"), std::string::npos)
      << trainer.status();
}

TEST_F(TrainerTest, NonFiniteLossStopsBeforeTheStep) {
  const Recipe recipe =
      tiny_recipe(prefix_, dir_ + "/run", {"optimizer.lr=1.0e+30", "optimizer.min_lr=1.0e+30",
                                           "optimizer.clip_grad=0", "optimizer.weight_decay=0"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  absl::Status failure;
  for (int i = 0; i < 5 && failure.ok(); ++i) failure = (*trainer)->train_step(i).status();
  ASSERT_FALSE(failure.ok());
  EXPECT_NE(failure.message().find("not finite"), std::string::npos) << failure;
}

}  // namespace
}  // namespace moefold::testing
