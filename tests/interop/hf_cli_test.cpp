// The Hugging Face commands as a user meets them: export-hf writes a folder or says in one line
// why not (leaving nothing behind); `train --load-hf` starts from it; `import-hf` turns it into a
// checkpoint whose parameters are the original's, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_file.h"
#include "hf_test_util.h"
#include "moefold_command.h"
#include "tiny_run.h"

namespace moefold::testing {
namespace {
namespace fs = std::filesystem;

int lines(const std::string& text) {
  return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
}

// Every tensor of two checkpoints' model.h5, compared bit for bit.
void expect_same_model(const std::string& a, const std::string& b) {
  auto fa = Hdf5File::open(*resolve_checkpoint_dir(a) + "/model.h5", MPI_COMM_NULL);
  auto fb = Hdf5File::open(*resolve_checkpoint_dir(b) + "/model.h5", MPI_COMM_NULL);
  ASSERT_TRUE(fa.ok() && fb.ok());
  const auto names = *fa->list_datasets();
  EXPECT_EQ(names, *fb->list_datasets());
  for (const std::string& name : names) {
    const std::vector<int64_t> shape = *fa->dataset_shape(name);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> va(n), vb(n);
    HyperslabF32 ba{std::vector<int64_t>(shape.size(), 0), shape, va.data()};
    HyperslabF32 bb{std::vector<int64_t>(shape.size(), 0), shape, vb.data()};
    ASSERT_TRUE(fa->read(name, &ba).ok() && fb->read(name, &bb).ok());
    EXPECT_EQ(std::memcmp(va.data(), vb.data(), n * 4), 0) << name;
  }
}

TEST(HfCli, ExportLoadAndImport) {
  const std::string dir = fresh_temp_dir("hf-cli");
  const std::string ckpt = train_and_save(dir, mixtral_overrides(), 2);
  // The run's own recipe, as a file for the commands.
  const std::string recipe = dir + "/recipe.yaml";
  std::ofstream(recipe)
      << read_json_file(*resolve_checkpoint_dir(ckpt) + "/meta.json")["recipe"].get<std::string>();

  const std::string hf = dir + "/hf";
  const CommandRun refused = run_moefold("export-hf " + ckpt + " --format olmoe --output " + hf);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.output.rfind("moefold export-hf: error: olmoe normalises q and k", 0), 0u)
      << refused.output;
  EXPECT_EQ(lines(refused.output), 1) << refused.output;
  EXPECT_FALSE(fs::exists(hf));
  const CommandRun usage = run_moefold("export-hf " + ckpt + " --output " + hf);
  EXPECT_EQ(usage.output, "moefold export-hf: error: --format mixtral|qwen2_moe|qwen3_moe|olmoe is required\n");

  const CommandRun exported =
      run_moefold("export-hf " + ckpt + " --format mixtral --output " + hf + " --max-shard-size 20KB");
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_NE(exported.output.find("40 tensors"), std::string::npos) << exported.output;
  EXPECT_TRUE(fs::exists(hf + "/model.safetensors.index.json"));

  const std::string base = "--config " + recipe + " --set logging.run_dir=" + dir + "/cli-run";
  const CommandRun both = run_moefold("train " + base + " --load " + ckpt + " --load-hf " + hf);
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.output.find("cannot be combined with --load"), std::string::npos) << both.output;

  const CommandRun trained = run_moefold("train " + base + " --load-hf " + hf +
                                         " --set checkpoint.save=" + dir + "/cli-save --set training.train_iters=1");
  EXPECT_EQ(trained.exit_code, 0) << trained.output;
  EXPECT_NE(trained.output.find("initialised from " + hf + " (mixtral)"), std::string::npos)
      << trained.output;

  const CommandRun imported =
      run_moefold("import-hf " + hf + " " + base + " --output " + dir + "/imported");
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  expect_same_model(ckpt, dir + "/imported");
  const CommandRun again = run_moefold("import-hf " + hf + " " + base + " --output " + dir + "/imported");
  EXPECT_NE(again.output.find("already exists"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace moefold::testing
