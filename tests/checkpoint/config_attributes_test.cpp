// The model config stored with a checkpoint: keys added after checkpoints were first written
// (model.kv_channels, model.qk_layernorm) are read from an older file as the model it holds.
#include "checkpoint/config_attributes.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/model/tiny_model_config.h"

namespace moefold {
namespace {

// A model.h5 with the config attributes of `c` but the named ones, as an older moefold wrote it.
std::string file_without(const ModelConfig& c, const std::vector<std::string>& left_out,
                         const std::string& name) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) /
                            (name + "_" + std::to_string(::getpid()) + ".h5"))
                               .string();
  auto file = Hdf5File::create(path, MPI_COMM_NULL);
  EXPECT_TRUE(file.ok()) << file.status();
  for (const ConfigAttribute& a : model_config_attributes(c)) {
    if (std::find(left_out.begin(), left_out.end(), a.name) != left_out.end()) continue;
    EXPECT_TRUE(file->write_attribute(a.name, a.value).ok()) << a.name;
  }
  EXPECT_TRUE(file->close().ok());
  return path;
}

absl::Status check(const std::string& path, const ModelConfig& expected) {
  auto file = Hdf5File::open(path, MPI_COMM_NULL);
  if (!file.ok()) return file.status();
  return check_model_config(*file, expected);
}

TEST(ModelConfigAttributes, OlderCheckpointsHoldTheHeadDimOfTheHeadsAndNoQkNorms) {
  const ModelConfig c = testing::tiny_model_config();  // head dim 16 / 4 = 4
  const std::string path = file_without(c, {"model.kv_channels", "model.qk_layernorm"}, "older");
  EXPECT_TRUE(check(path, c).ok()) << check(path, c);
  ModelConfig same_head_dim = c;
  same_head_dim.kv_channels = 4;  // = hidden / heads, written out
  EXPECT_TRUE(check(path, same_head_dim).ok());
  ModelConfig qk = c;
  qk.qk_layernorm = true;
  EXPECT_EQ(check(path, qk).message(),
            path + ": model config mismatch: model.qk_layernorm is 0 in the checkpoint, 1 in the "
                   "recipe");
  ModelConfig wide = c;
  wide.kv_channels = 8;
  EXPECT_EQ(check(path, wide).message(),
            path + ": model config mismatch: model.kv_channels is 4 in the checkpoint, 8 in the "
                   "recipe");
  // Any other key missing is still a file that is not a moefold checkpoint.
  const std::string no_layers = file_without(c, {"model.num_layers"}, "no_layers");
  EXPECT_EQ(check(no_layers, c).message(),
            no_layers + ": not a moefold model checkpoint: model config attribute "
                        "'model.num_layers' is missing");
}

}  // namespace
}  // namespace moefold
