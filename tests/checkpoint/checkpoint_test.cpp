// Single-process checkpoint tests: bit-exact round trip of parameters, buffers and Adam state,
// atomic commit (leftover *.tmp, a save that dies mid-write), keep_last, and every validation
// error, each checked to leave the model untouched.
#include "checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/inspect.h"
#include "model/model.h"

namespace moefold {
namespace {
namespace fs = std::filesystem;

// 2 layers (0 dense, 1 MoE with expert bias and a shared expert), hidden 16, V = 64.
ModelConfig tiny_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.ffn_hidden_size = 24;
  c.vocab_size = 50;
  c.make_vocab_size_divisible_by = 16;
  c.seq_length = 6;
  c.untie_embeddings_and_output_weights = true;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, 1};
  c.moe.moe_shared_expert_intermediate_size = 8;
  c.moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  c.moe.moe_router_enable_expert_bias = true;
  return c;
}

// A model and its optimizer, with non-trivial Adam moments (two steps on made-up gradients)
// and expert biases.
struct Trained {
  std::unique_ptr<Model> model;
  std::unique_ptr<AdamW> optimizer;

  Trained(const ModelConfig& config, uint64_t seed, int steps) {
    model = std::make_unique<Model>(config, ParallelContext::single_process());
    model->init_parameters(seed);
    std::vector<OptimTensor> tensors;
    for (Parameter* p : model->parameters()) {
      tensors.push_back({p->name(), p->value, p->grad, p->weight_decay});
    }
    optimizer = std::make_unique<AdamW>(OptimizerConfig{}, tensors);
    for (int s = 0; s < steps; ++s) {
      for (Parameter* p : model->parameters()) {
        float* g = p->grad.data();
        for (int64_t i = 0; i < p->grad.numel(); ++i) g[i] = 0.01f * ((i * 7 + s * 3) % 11 - 5);
      }
      optimizer->step(1e-3);
    }
    for (Buffer* b : model->buffers()) {
      for (int64_t i = 0; i < b->value.numel(); ++i) b->value.data()[i] = 0.125f * (i + seed);
    }
  }
  const ParameterRegistry& registry() const { return model->registry(); }
};

// Every float of parameters, buffers and moments, plus the step count, for bit-exact compares.
struct Snapshot {
  std::vector<std::vector<float>> values;
  int64_t steps = 0;

  explicit Snapshot(const Trained& t) {
    for (const auto& p : t.registry().parameters()) values.push_back(p->value.to_vector());
    for (const auto& b : t.registry().buffers()) values.push_back(b->value.to_vector());
    for (size_t i = 0; i < t.optimizer->tensors().size(); ++i) {
      values.push_back(t.optimizer->exp_avg(i).to_vector());
      values.push_back(t.optimizer->exp_avg_sq(i).to_vector());
    }
    steps = t.optimizer->steps();
  }
  bool bit_equal(const Snapshot& other) const {
    if (steps != other.steps || values.size() != other.values.size()) return false;
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i].size() != other.values[i].size() ||
          std::memcmp(values[i].data(), other.values[i].data(), values[i].size() * 4) != 0) {
        return false;
      }
    }
    return true;
  }
};

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("moefold_ckpt_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  absl::StatusOr<CheckpointIoStats> save(const Trained& t, int64_t iteration) {
    CheckpointState state{iteration, iteration * 8, "model:\n  hidden_size: 16\n"};
    return save_checkpoint(dir_.string(), state, t.registry(), t.optimizer.get(),
                           ParallelContext::single_process(), config_, options_);
  }
  absl::StatusOr<CheckpointState> load(Trained& t, const ModelConfig& expected) {
    return load_checkpoint(dir_.string(), t.registry(), t.optimizer.get(),
                           ParallelContext::single_process(), expected);
  }
  std::string iter_dir(int64_t iteration) const {
    return (dir_ / iteration_dir_name(iteration)).string();
  }
  // Expects `load` to fail with a message containing every part, and nothing to change.
  void expect_load_error(const std::vector<std::string>& parts,
                         const ModelConfig* expected = nullptr) {
    Trained fresh(config_, 99, 1);
    const Snapshot before(fresh);
    auto result = load(fresh, expected ? *expected : config_);
    ASSERT_FALSE(result.ok());
    const std::string message(result.status().message());
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
    EXPECT_TRUE(Snapshot(fresh).bit_equal(before)) << "a failed load modified the model";
  }

  ModelConfig config_ = tiny_config();
  CheckpointSaveOptions options_;
  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  Trained original(config_, 1, 2);
  auto stats = save(original, 7);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->dir, iter_dir(7));
  EXPECT_GT(stats->bytes, 0);
  for (const char* f : {kModelFile, kOptimFile, kMetaFile}) {
    EXPECT_TRUE(fs::exists(fs::path(iter_dir(7)) / f)) << f;
  }
  EXPECT_EQ(*read_latest(dir_.string()), 7);

  Trained restored(config_, 2, 0);
  ASSERT_FALSE(Snapshot(restored).bit_equal(Snapshot(original)));
  CheckpointIoStats load_stats;
  auto state = load_checkpoint(dir_.string(), restored.registry(), restored.optimizer.get(),
                               ParallelContext::single_process(), config_, &load_stats);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->iteration, 7);
  EXPECT_EQ(state->consumed_samples, 56);
  EXPECT_EQ(state->recipe_text, "model:\n  hidden_size: 16\n");
  EXPECT_EQ(load_stats.bytes, stats->bytes);
  EXPECT_EQ(restored.optimizer->steps(), 2);
  EXPECT_TRUE(Snapshot(restored).bit_equal(Snapshot(original)));
  EXPECT_FALSE(restored.model->buffers().empty());

  // An iteration directory loads directly too; so does a model without its optimizer.
  Trained eval_only(config_, 3, 0);
  ASSERT_TRUE(load_checkpoint(iter_dir(7), eval_only.registry(), nullptr,
                              ParallelContext::single_process(), config_)
                  .ok());
  EXPECT_EQ(eval_only.registry().parameters()[0]->value.to_vector(),
            original.registry().parameters()[0]->value.to_vector());
}

// Steps [from, to) of a small training loop (forward, backward, AdamW with a step-dependent
// LR) on batches that depend on the step; returns each step's LM loss.
std::vector<double> train_steps(Trained& t, int from, int to) {
  std::vector<double> losses;
  auto stash = t.model->make_stash();
  for (int s = from; s < to; ++s) {
    TokenBatch mb{2, 6, {}, {}, {}};
    for (int i = 0; i < 12; ++i) {
      mb.tokens.push_back((7 * i + 3 * s + 1) % 50);
      mb.labels.push_back((5 * i + s + 2) % 50);
      mb.loss_mask.push_back(i % 5 == 3 ? 0.0f : 1.0f);
    }
    const LossScales scales{1.0 / 10, 0.5};
    t.model->zero_grad();
    const MicroBatchStats stats = t.model->forward(mb, scales, *stash);
    t.model->backward(*stash);
    t.optimizer->step(1e-2 / (1 + s));
    losses.push_back(stats.host_lm_loss_sum() / 10);
  }
  return losses;
}

TEST_F(CheckpointTest, ResumeIsBitExact) {
  Trained straight(config_, 1, 0);
  const std::vector<double> losses = train_steps(straight, 0, 6);

  Trained first_half(config_, 1, 0);
  train_steps(first_half, 0, 3);
  ASSERT_TRUE(save(first_half, 3).ok());
  // Saving changes nothing: the saving run goes on exactly as the uninterrupted one.
  EXPECT_EQ(train_steps(first_half, 3, 4)[0], losses[3]);
  Trained resumed(config_, 8, 0);
  auto state = load(resumed, config_);
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->iteration, 3);
  const std::vector<double> second_half = train_steps(resumed, 3, 6);
  for (int s = 0; s < 3; ++s) EXPECT_EQ(second_half[s], losses[3 + s]) << "step " << 3 + s;
  EXPECT_TRUE(Snapshot(resumed).bit_equal(Snapshot(straight)));
}

TEST_F(CheckpointTest, FilesFollowModelMdLayoutAndH5dumpReadsThem) {
  Trained original(config_, 1, 1);
  ASSERT_TRUE(save(original, 3).ok());
  const std::string model = iter_dir(3) + "/" + kModelFile;
  const std::string optim = iter_dir(3) + "/" + kOptimFile;
  const auto h5dump = [](const std::string& args) {
    std::string out;
    FILE* pipe = ::popen(("h5dump " + args + " 2>&1").c_str(), "r");
    char buffer[4096];
    while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
    EXPECT_EQ(::pclose(pipe), 0) << out;
    return out;
  };
  if (std::system("command -v h5dump >/dev/null 2>&1") != 0) GTEST_SKIP() << "no h5dump";
  const std::string header = h5dump("-H " + model);
  EXPECT_NE(header.find("DATASET \"router\""), std::string::npos);
  EXPECT_NE(header.find("ATTRIBUTE \"model.hidden_size\""), std::string::npos);
  // MODEL.md shapes: experts w_down [E, H, F] = [4, 16, 8]; router [E, H].
  const std::string w_down = h5dump("-H -d /layers/1/moe/experts/w_down " + model);
  EXPECT_NE(w_down.find("( 4, 16, 8 )"), std::string::npos) << w_down;
  const std::string router = h5dump("-H -d /layers/1/moe/router " + model);
  EXPECT_NE(router.find("( 4, 16 )"), std::string::npos) << router;
  EXPECT_NE(router.find("H5T_IEEE_F32LE"), std::string::npos) << router;
  const std::string moments = h5dump("-H -d /exp_avg_sq/embed " + optim);
  EXPECT_NE(moments.find("( 64, 16 )"), std::string::npos) << moments;
  const std::string step = h5dump("-a /step " + optim);
  EXPECT_NE(step.find("(0): 1"), std::string::npos) << step;
  // The data itself, as h5dump prints it (%g).
  const std::string final_norm = h5dump("-d /final_norm " + model);
  char first[64];
  std::snprintf(first, sizeof first, "(0): %g, ",
                original.registry().find("final_norm")->value.data()[0]);
  EXPECT_NE(final_norm.find(first), std::string::npos) << first << "\n" << final_norm;
}

TEST_F(CheckpointTest, InspectListsTensorsIterationAndRecipe) {
  Trained original(config_, 1, 1);
  ASSERT_TRUE(save(original, 12).ok());
  auto text = inspect_checkpoint(dir_.string());
  ASSERT_TRUE(text.ok()) << text.status();
  for (const char* part :
       {"iteration: 12", "consumed samples: 96", "layers/1/moe/router", "[4, 16]",
        "exp_avg_sq/layers/1/moe/experts/w_gate", "[4, 8, 16]", "@model.hidden_size = 16",
        "world size 1 TP=1 CP=1 PP=1 DP=1 EP=1", "recipe:\nmodel:\n  hidden_size: 16"}) {
    EXPECT_NE(text->find(part), std::string::npos) << part << "\n" << *text;
  }
  // layers/0 is listed before layers/1 and embed before final_norm.
  EXPECT_LT(text->find("layers/0/attn/wq"), text->find("layers/1/attn/wq"));
  EXPECT_FALSE(inspect_checkpoint((dir_ / "nowhere").string()).ok());
}

TEST_F(CheckpointTest, LeftoverTmpIsIgnoredAndLatestKeepsThePrevious) {
  Trained original(config_, 1, 1);
  ASSERT_TRUE(save(original, 1).ok());
  fs::create_directories(dir_ / "iter_0000002.tmp");
  std::ofstream(dir_ / "iter_0000002.tmp" / kModelFile) << "half a file";
  EXPECT_EQ(list_checkpoints(dir_.string()), std::vector<int64_t>{1});
  Trained restored(config_, 2, 0);
  auto state = load(restored, config_);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->iteration, 1);
  EXPECT_TRUE(Snapshot(restored).bit_equal(Snapshot(original)));
  // The next save of that iteration replaces the leftovers.
  ASSERT_TRUE(save(original, 2).ok());
  EXPECT_FALSE(fs::exists(dir_ / "iter_0000002.tmp"));
  EXPECT_EQ(*read_latest(dir_.string()), 2);
}

TEST_F(CheckpointTest, SaveThatDiesMidWriteLeavesThePreviousLoadable) {
  Trained original(config_, 1, 1);
  ASSERT_TRUE(save(original, 1).ok());
  Trained later(config_, 5, 2);
  // The default "fast" death-test style forks here, so the child writes into this dir_.
  EXPECT_DEATH(
      {
        ::setenv("MOEFOLD_TEST_ABORT_SAVE_AFTER", "5", 1);
        (void)save(later, 2);
      },
      "");
  EXPECT_TRUE(fs::exists(dir_ / "iter_0000002.tmp" / kModelFile));
  EXPECT_FALSE(fs::exists(dir_ / "iter_0000002"));
  EXPECT_EQ(*read_latest(dir_.string()), 1);
  Trained restored(config_, 2, 0);
  auto state = load(restored, config_);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(state->iteration, 1);
  EXPECT_TRUE(Snapshot(restored).bit_equal(Snapshot(original)));
}

TEST_F(CheckpointTest, KeepLastPrunesOnlyAfterTheNewOneIsComplete) {
  options_.keep_last = 2;
  Trained t(config_, 1, 1);
  for (int64_t it : {1, 2, 3}) ASSERT_TRUE(save(t, it).ok());
  EXPECT_EQ(list_checkpoints(dir_.string()), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(*read_latest(dir_.string()), 3);
  // Saving the same iteration again replaces it in place.
  ASSERT_TRUE(save(t, 3).ok());
  EXPECT_EQ(list_checkpoints(dir_.string()), (std::vector<int64_t>{2, 3}));
  options_.keep_last = 0;
  ASSERT_TRUE(save(t, 4).ok());
  EXPECT_EQ(list_checkpoints(dir_.string()), (std::vector<int64_t>{2, 3, 4}));
}

// Opens model.h5 read-write for surgery with the raw HDF5 API.
class RawFile {
 public:
  explicit RawFile(const std::string& path)
      : id_(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)) {}
  ~RawFile() { H5Fclose(id_); }
  hid_t id() const { return id_; }

 private:
  hid_t id_;
};

TEST_F(CheckpointTest, MissingTensorIsNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  {
    RawFile file(iter_dir(1) + "/" + kModelFile);
    ASSERT_GE(H5Ldelete(file.id(), "layers/1/moe/router", H5P_DEFAULT), 0);
  }
  expect_load_error({"model.h5", "missing tensor 'layers/1/moe/router'"});
}

TEST_F(CheckpointTest, MissingOptimizerTensorIsNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  {
    RawFile file(iter_dir(1) + "/" + kOptimFile);
    ASSERT_GE(H5Ldelete(file.id(), "exp_avg_sq/final_norm", H5P_DEFAULT), 0);
  }
  expect_load_error({"optim.h5", "missing tensor 'exp_avg_sq/final_norm'"});
}

TEST_F(CheckpointTest, WrongShapeIsNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  {
    RawFile file(iter_dir(1) + "/" + kModelFile);
    ASSERT_GE(H5Ldelete(file.id(), "final_norm", H5P_DEFAULT), 0);
    const hsize_t dims[1] = {17};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t ds = H5Dcreate2(file.id(), "final_norm", H5T_IEEE_F32LE, space, H5P_DEFAULT,
                                H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(ds, 0);
    H5Dclose(ds);
    H5Sclose(space);
  }
  expect_load_error({"model.h5", "tensor 'final_norm' has shape [17]", "expects [16]"});
}

TEST_F(CheckpointTest, ModelConfigMismatchIsNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  ModelConfig other = config_;
  other.moe.moe_router_topk = 1;
  expect_load_error({"model.h5", "model config mismatch",
                     "moe.moe_router_topk is 2 in the "
                     "checkpoint, 1 in the recipe"},
                    &other);
  // Keys that do not change the model (here the aux loss weight) may differ.
  other = config_;
  other.moe.moe_aux_loss_coeff = 0.5f;
  Trained restored(config_, 2, 0);
  EXPECT_TRUE(load(restored, other).ok());
}

TEST_F(CheckpointTest, TruncatedFilesAreRejected) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  for (const char* name : {kOptimFile, kModelFile}) {
    const fs::path file = fs::path(iter_dir(1)) / name;
    fs::resize_file(file, fs::file_size(file) / 2);
    expect_load_error({std::string(name), "truncated"});
  }
}

TEST_F(CheckpointTest, CorruptMetaAndMissingFilesAreNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  fs::remove(fs::path(iter_dir(1)) / kOptimFile);
  expect_load_error({"optim.h5", "no such file"});
  std::ofstream(fs::path(iter_dir(1)) / kMetaFile) << "{\"iteration\": 1, ";
  expect_load_error({"meta.json", "not valid JSON"});
}

TEST_F(CheckpointTest, BadLatestIsNamed) {
  Trained t(config_, 1, 1);
  ASSERT_TRUE(save(t, 1).ok());
  std::ofstream(dir_ / kLatestFile) << "garbage\n";
  expect_load_error({"latest", "expected the last saved iteration number, got 'garbage'"});
  std::ofstream(dir_ / kLatestFile) << "5\n";
  expect_load_error({"latest names iteration 5", "iter_0000005 is missing"});
  fs::remove(dir_ / kLatestFile);
  expect_load_error({"not a checkpoint"});
}

}  // namespace
}  // namespace moefold
