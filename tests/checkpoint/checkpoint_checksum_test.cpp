// Checkpoint integrity: a layout-independent checksum per tensor (tensor_checksum.h) is recorded
// at save and verified at load and by `moefold ckpt verify`; one changed byte in any tensor is
// one error line naming the file and the tensor.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/tensor_checksum.h"
#include "checkpoint/verify.h"
#include "model/model.h"

namespace moefold {
namespace {
namespace fs = std::filesystem;

TEST(TensorChecksum, SumOfBoxesIsTheWholeTensorsUnderAnySplit) {
  const std::vector<int64_t> shape = {6, 5, 4};
  std::vector<float> whole(120);
  std::iota(whole.begin(), whole.end(), 0.5f);
  const uint64_t reference = box_checksum(shape, {0, 0, 0}, shape, whole.data());
  // Split along each axis in two boxes; each box copied out contiguously as a rank holds it.
  for (int axis = 0; axis < 3; ++axis) {
    uint64_t sum = 0;
    const int64_t cut = shape[axis] / 2;
    for (int part = 0; part < 2; ++part) {
      std::vector<int64_t> offset = {0, 0, 0}, box = shape;
      offset[axis] = part == 0 ? 0 : cut;
      box[axis] = part == 0 ? cut : shape[axis] - cut;
      std::vector<float> local;
      for (int64_t i = 0; i < box[0]; ++i)
        for (int64_t j = 0; j < box[1]; ++j)
          for (int64_t k = 0; k < box[2]; ++k)
            local.push_back(whole[((offset[0] + i) * 5 + offset[1] + j) * 4 + offset[2] + k]);
      sum += box_checksum(shape, offset, box, local.data());
    }
    EXPECT_EQ(sum, reference) << "split along axis " << axis;
  }
  std::vector<float> swapped = whole;
  std::swap(swapped[3], swapped[4]);  // same values, other places
  EXPECT_NE(box_checksum(shape, {0, 0, 0}, shape, swapped.data()), reference);
  EXPECT_EQ(parse_checksum(format_checksum(reference)), reference);
  EXPECT_FALSE(parse_checksum("xxh3sum:12").has_value());
}

class CheckpointChecksumTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ("moefold_checksum_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    config_.num_layers = 2;
    config_.hidden_size = 16;
    config_.num_attention_heads = 4;
    config_.ffn_hidden_size = 24;
    config_.vocab_size = 64;
    config_.make_vocab_size_divisible_by = 16;
    config_.seq_length = 6;
    config_.moe.num_experts = 4;
    config_.moe.moe_ffn_hidden_size = 8;
    config_.moe.moe_layer_pattern = {0, 1};
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<AdamW> adam_for(Model& model) {
    std::vector<OptimTensor> tensors;
    for (Parameter* p : model.parameters())
      tensors.push_back({p->name(), p->value, p->grad, p->weight_decay});
    return std::make_unique<AdamW>(OptimizerConfig{}, tensors);
  }
  // Flips one bit of element 3 of dataset `name` in `file`, in place on disk.
  static void corrupt(const std::string& file, const std::string& name) {
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
    ASSERT_GE(d, 0);
    const haddr_t offset = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    ASSERT_NE(offset, HADDR_UNDEF);
    std::fstream bytes(file, std::ios::in | std::ios::out | std::ios::binary);
    bytes.seekg(static_cast<std::streamoff>(offset + 3 * 4 + 1));
    char c = 0;
    bytes.get(c);
    bytes.seekp(static_cast<std::streamoff>(offset + 3 * 4 + 1));
    bytes.put(static_cast<char>(c ^ 0x10));
  }

  std::string dir_;
  ModelConfig config_;
};

TEST_F(CheckpointChecksumTest, CorruptByteIsOneLineAtLoadAndFromVerify) {
  const ParallelContext ctx = ParallelContext::single_process();
  Model model(config_, ctx);
  model.init_parameters(3);
  auto adam = adam_for(model);
  for (Parameter* p : model.parameters()) p->grad.fill(0.02f);
  adam->step(1e-2);
  ASSERT_TRUE(save_checkpoint(dir_, {2, 16, ""}, model.registry(), adam.get(), ctx, config_).ok());
  auto verified = verify_checkpoint(dir_);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_NE(verified->find("tensors (") , std::string::npos) << *verified;

  const std::string tensor = model.parameters()[1]->name();
  for (const auto& [file, dataset] :
       std::vector<std::pair<std::string, std::string>>{{kModelFile, tensor},
                                                        {kOptimFile, "exp_avg_sq/" + tensor}}) {
    SCOPED_TRACE(file);
    const std::string path = (fs::path(dir_) / iteration_dir_name(2) / file).string();
    const std::string pristine = path + ".pristine";
    fs::copy_file(path, pristine, fs::copy_options::overwrite_existing);
    corrupt(path, dataset);
    const std::string expected = path + ": tensor '" + dataset + "' is corrupt";
    auto bad = verify_checkpoint(dir_);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.status().message().rfind(expected, 0), 0u) << bad.status();
    Model restored(config_, ctx);
    auto restored_adam = adam_for(restored);
    auto loaded = load_checkpoint(dir_, restored.registry(), restored_adam.get(), ctx, config_);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().message().rfind(expected, 0), 0u) << loaded.status();
    EXPECT_EQ(loaded.status().message().find('\n'), std::string::npos);
    fs::rename(pristine, path);
  }
  EXPECT_TRUE(verify_checkpoint(dir_).ok());
}

TEST_F(CheckpointChecksumTest, CheckpointsWithoutChecksumsStillLoadButDoNotVerify) {
  const ParallelContext ctx = ParallelContext::single_process();
  Model model(config_, ctx);
  model.init_parameters(4);
  ASSERT_TRUE(save_checkpoint(dir_, {1, 0, ""}, model.registry(), nullptr, ctx, config_).ok());
  // An older meta.json: the same without "checksums".
  const std::string meta = (fs::path(dir_) / iteration_dir_name(1) / kMetaFile).string();
  std::ifstream in(meta);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t begin = text.find("  \"checksums\"");
  const size_t end = text.find("  \"recipe\"");
  ASSERT_NE(begin, std::string::npos);
  text.erase(begin, end - begin);
  std::ofstream(meta) << text;
  Model restored(config_, ctx);
  EXPECT_TRUE(load_checkpoint(dir_, restored.registry(), nullptr, ctx, config_).ok());
  auto verified = verify_checkpoint(dir_);
  ASSERT_FALSE(verified.ok());
  EXPECT_NE(verified.status().message().find("no checksums recorded"), std::string::npos);
}

}  // namespace
}  // namespace moefold
