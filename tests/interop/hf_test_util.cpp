#include "hf_test_util.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tiny_run.h"
#include "trainer/trainer.h"

namespace moefold::testing {

std::vector<std::string> mixtral_overrides() {
  return {"moe.moe_layer_freq=1", "moe.moe_shared_expert_intermediate_size=0"};
}

std::vector<std::string> qwen3_overrides() {
  return {"moe.moe_shared_expert_intermediate_size=0", "model.qk_layernorm=true",
          "model.kv_channels=12"};
}

TokenBatch fixed_batch() {
  TokenBatch b;
  b.batch = 2;
  b.seq = 16;
  for (int i = 0; i < 32; ++i) {
    b.tokens.push_back((i * 37 + 11) % 257);
    b.labels.push_back((i * 53 + 5) % 257);
    b.loss_mask.push_back(i % 7 == 3 ? 0.0f : 1.0f);
  }
  return b;
}

std::string train_and_save(const std::string& dir, const std::vector<std::string>& overrides,
                           int steps) {
  const std::string prefix = write_tiny_dataset(dir + "/data", 200, 5);
  std::vector<std::string> all = overrides;
  all.push_back("checkpoint.save=" + dir + "/ckpt");
  const Recipe recipe = tiny_recipe(prefix, dir + "/run", all);
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return "";
  for (int i = 0; i < steps; ++i) EXPECT_TRUE((*trainer)->train_step(i).ok());
  const absl::Status saved = (*trainer)->save_checkpoint(steps);
  EXPECT_TRUE(saved.ok()) << saved;
  return dir + "/ckpt";
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::map<std::string, IndependentTensor> read_hf_folder(const std::string& dir) {
  std::map<std::string, IndependentTensor> out;
  const nlohmann::json index = read_json_file(dir + "/model.safetensors.index.json");
  std::map<std::string, bool> files;
  for (const auto& [name, file] : index["weight_map"].items()) files[file.get<std::string>()] = true;
  for (const auto& [file, unused] : files) {
    std::ifstream in(dir + "/" + file, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), {}};
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[i]);
    const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
    for (const auto& [name, v] : header.items()) {
      if (name == "__metadata__") continue;
      EXPECT_EQ(index["weight_map"][name], file) << name;
      IndependentTensor t;
      t.dtype = v["dtype"];
      t.shape = v["shape"].get<std::vector<int64_t>>();
      const size_t begin = v["data_offsets"][0], end = v["data_offsets"][1];
      if (t.dtype == "F32") {
        t.values.resize((end - begin) / 4);
        std::memcpy(t.values.data(), bytes.data() + 8 + n + begin, end - begin);
      }
      out[name] = std::move(t);
    }
  }
  return out;
}

}  // namespace moefold::testing
