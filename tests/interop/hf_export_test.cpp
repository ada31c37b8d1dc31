// export-hf and load_hf in one process: names, shapes and values checked by the independent
// reader against model.h5, config.json, the round trip back into a model (bit-identical
// parameters, identical loss), qwen2_moe with a dense layer, qwen3_moe with q/k norms and its own
// head dim, and every refusal as one line.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_file.h"
#include "hf_test_util.h"
#include "interop/export_hf.h"
#include "interop/load_hf.h"
#include "interop/sharded_safetensors.h"
#include "tests/tensor/host_device.h"
#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {
namespace fs = std::filesystem;

// A tensor of the checkpoint (or one expert's slice of it), read independently of interop/.
std::vector<float> checkpoint_tensor(const std::string& ckpt, const std::string& name,
                                     int expert = -1) {
  auto dir = resolve_checkpoint_dir(ckpt);
  EXPECT_TRUE(dir.ok());
  auto file = Hdf5File::open(*dir + "/model.h5", MPI_COMM_NULL);
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<int64_t> shape = *file->dataset_shape(name);
  std::vector<int64_t> offset(shape.size(), 0);
  if (expert >= 0) {
    offset[0] = expert;
    shape[0] = 1;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values(n);
  HyperslabF32 box{offset, shape, values.data()};
  EXPECT_TRUE(file->read(name, &box).ok());
  return values;
}

absl::StatusOr<ExportHfResult> export_to(const std::string& ckpt, HfFormat format,
                                         const std::string& out, int64_t shard = 5'000'000'000) {
  return export_hf({ckpt, format, out, shard});
}

class ExportHf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fresh_temp_dir("export-hf");
    mixtral_ckpt_ = train_and_save(dir_ + "/mixtral", mixtral_overrides(), 2);
    qwen_ckpt_ = train_and_save(dir_ + "/qwen",
                                {"moe.moe_shared_expert_intermediate_size=0",
                                 "model.untie_embeddings_and_output_weights=true",
                                 "moe.moe_router_pre_softmax=true"},
                                2);
    default_ckpt_ = train_and_save(dir_ + "/default", {}, 1);
    qwen3_ckpt_ = train_and_save(dir_ + "/qwen3", qwen3_overrides(), 2);
  }
  static inline std::string dir_, mixtral_ckpt_, qwen_ckpt_, default_ckpt_, qwen3_ckpt_;
};

TEST_F(ExportHf, MixtralNamesShapesAndValues) {
  const std::string out = dir_ + "/mixtral-hf";
  auto result = export_to(mixtral_ckpt_, HfFormat::kMixtral, out, 20'000);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->shards, 2);
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().string().find(".partial-"), std::string::npos) << entry.path();
  }

  const auto tensors = read_hf_folder(out);
  // tiny: L 2, H 32, 4 heads of 8, 2 kv heads, E 4 experts of F 32, byte vocab 257 → V 384, tied.
  EXPECT_EQ(tensors.size(), 1 + 2 * (6 + 1 + 4 * 3) + 1u);
  const std::map<std::string, std::vector<int64_t>> shapes = {
      {"model.embed_tokens.weight", {384, 32}},
      {"model.layers.1.input_layernorm.weight", {32}},
      {"model.layers.1.self_attn.q_proj.weight", {32, 32}},
      {"model.layers.1.self_attn.k_proj.weight", {16, 32}},
      {"model.layers.1.self_attn.v_proj.weight", {16, 32}},
      {"model.layers.1.self_attn.o_proj.weight", {32, 32}},
      {"model.layers.1.post_attention_layernorm.weight", {32}},
      {"model.layers.1.block_sparse_moe.gate.weight", {4, 32}},
      {"model.layers.1.block_sparse_moe.experts.3.w1.weight", {32, 32}},
      {"model.layers.1.block_sparse_moe.experts.3.w2.weight", {32, 32}},
      {"model.layers.1.block_sparse_moe.experts.3.w3.weight", {32, 32}},
      {"model.norm.weight", {32}}};
  for (const auto& [name, shape] : shapes) {
    ASSERT_TRUE(tensors.contains(name)) << name;
    EXPECT_EQ(tensors.at(name).dtype, "F32") << name;
    EXPECT_EQ(tensors.at(name).shape, shape) << name;
  }
  EXPECT_FALSE(tensors.contains("lm_head.weight"));  // tied
  EXPECT_EQ(tensors.at("model.embed_tokens.weight").values, checkpoint_tensor(mixtral_ckpt_, "embed"));
  EXPECT_EQ(tensors.at("model.layers.0.self_attn.k_proj.weight").values,
            checkpoint_tensor(mixtral_ckpt_, "layers/0/attn/wk"));
  EXPECT_EQ(tensors.at("model.layers.1.block_sparse_moe.gate.weight").values,
            checkpoint_tensor(mixtral_ckpt_, "layers/1/moe/router"));
  EXPECT_EQ(tensors.at("model.layers.1.block_sparse_moe.experts.2.w1.weight").values,
            checkpoint_tensor(mixtral_ckpt_, "layers/1/moe/experts/w_gate", 2));
  EXPECT_EQ(tensors.at("model.layers.1.block_sparse_moe.experts.2.w3.weight").values,
            checkpoint_tensor(mixtral_ckpt_, "layers/1/moe/experts/w_up", 2));
  EXPECT_EQ(tensors.at("model.layers.0.block_sparse_moe.experts.1.w2.weight").values,
            checkpoint_tensor(mixtral_ckpt_, "layers/0/moe/experts/w_down", 1));

  const nlohmann::json config = read_json_file(out + "/config.json");
  EXPECT_EQ(config["architectures"][0], "MixtralForCausalLM");
  EXPECT_EQ(config["model_type"], "mixtral");
  EXPECT_EQ(config["vocab_size"], 384);  // the padded vocabulary
  EXPECT_EQ(config["hidden_size"], 32);
  EXPECT_EQ(config["intermediate_size"], 32);
  EXPECT_EQ(config["num_hidden_layers"], 2);
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["num_key_value_heads"], 2);
  EXPECT_EQ(config["num_local_experts"], 4);
  EXPECT_EQ(config["num_experts_per_tok"], 2);
  EXPECT_EQ(config["rms_norm_eps"], 1e-5);
  EXPECT_EQ(config["rope_theta"], 10000.0);
  EXPECT_EQ(config["tie_word_embeddings"], true);
  EXPECT_EQ(config["eos_token_id"], 256);  // the byte tokenizer's end of document
  EXPECT_TRUE(config["bos_token_id"].is_null());  // none, rather than transformers' default 1
  EXPECT_TRUE(fs::exists(out + "/generation_config.json"));
  EXPECT_NE(result->notes.front().find("no tokenizer files: the byte tokenizer"), std::string::npos);
}

// The model a recipe builds in one process, initialised with another seed than the checkpoint's.
std::unique_ptr<Trainer> fresh_trainer(const std::string& ckpt,
                                       std::vector<std::string> overrides = {}) {
  auto dir = resolve_checkpoint_dir(ckpt);
  const nlohmann::json meta = read_json_file(*dir + "/meta.json");
  overrides.push_back("training.seed=99");
  auto recipe = parse_recipe_string(meta["recipe"].get<std::string>(), "meta.json", overrides);
  EXPECT_TRUE(recipe.ok()) << recipe.status();
  auto trainer = Trainer::create(*recipe, ParallelContext::single_process());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  return std::move(*trainer);
}

void expect_round_trip(const std::string& ckpt, HfFormat format, const std::string& out) {
  ASSERT_TRUE(export_to(ckpt, format, out).ok());
  std::unique_ptr<Trainer> from_hf = fresh_trainer(ckpt), from_ckpt = fresh_trainer(ckpt);
  ASSERT_TRUE(from_hf && from_ckpt);
  const absl::Status loaded = load_hf_checkpoint(out, from_hf->model().registry(),
                                                 from_hf->recipe().model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  ASSERT_TRUE(from_ckpt->load_checkpoint(ckpt, /*model_only=*/true).ok());
  const auto& a = from_hf->model().registry().parameters();
  const auto& b = from_ckpt->model().registry().parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t n = a[i]->layout.local_numel();
    EXPECT_EQ(std::memcmp(a[i]->value.data(), b[i]->value.data(), n * 4), 0) << a[i]->name();
  }
  auto loss_hf = from_hf->evaluate(2), loss_ckpt = from_ckpt->evaluate(2);
  ASSERT_TRUE(loss_hf.ok() && loss_ckpt.ok());
  EXPECT_EQ(loss_hf->loss, loss_ckpt->loss);
  EXPECT_GT(loss_hf->tokens, 0);
}

// --load-hf into a model on a device: read on the host, then copied (the stand-in device with
// its memory closed to the host, tests/tensor/guarded_arena.h); equal to loading on the CPU.
TEST_F(ExportHf, LoadsIntoDeviceTensors) {
  if (!use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  dynamic_cast<HostMemoryDevice&>(backend_for(Device::kCuda)).set_guarded(true);
  const std::string out = dir_ + "/mixtral-device";
  ASSERT_TRUE(export_to(mixtral_ckpt_, HfFormat::kMixtral, out).ok());
  std::unique_ptr<Trainer> on_device = fresh_trainer(mixtral_ckpt_, {"training.device=cuda"});
  std::unique_ptr<Trainer> on_cpu = fresh_trainer(mixtral_ckpt_);
  ASSERT_TRUE(on_device && on_cpu);
  ASSERT_TRUE(load_hf_checkpoint(out, on_device->model().registry(), on_device->recipe().model)
                  .ok());
  ASSERT_TRUE(load_hf_checkpoint(out, on_cpu->model().registry(), on_cpu->recipe().model).ok());
  const auto& a = on_device->model().registry().parameters();
  const auto& b = on_cpu->model().registry().parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]->value.device(), Device::kCuda);
    EXPECT_EQ(a[i]->value.to_vector(), b[i]->value.to_vector()) << a[i]->name();
  }
}

TEST_F(ExportHf, OutputWithATrailingSlash) {
  auto result = export_to(mixtral_ckpt_, HfFormat::kMixtral, dir_ + "/slash/");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(fs::exists(dir_ + "/slash/config.json"));
}

TEST_F(ExportHf, MixtralRoundTripIsBitIdentical) {
  expect_round_trip(mixtral_ckpt_, HfFormat::kMixtral, dir_ + "/mixtral-round-trip");
}

TEST_F(ExportHf, Qwen2MoeWithDenseLayerRoundTrip) {
  const std::string out = dir_ + "/qwen-hf";
  expect_round_trip(qwen_ckpt_, HfFormat::kQwen2Moe, out);
  const nlohmann::json config = read_json_file(out + "/config.json");
  EXPECT_EQ(config["model_type"], "qwen2_moe");
  EXPECT_EQ(config["mlp_only_layers"], nlohmann::json({0}));
  EXPECT_EQ(config["intermediate_size"], 64);
  EXPECT_EQ(config["moe_intermediate_size"], 32);
  EXPECT_EQ(config["norm_topk_prob"], false);  // moe_router_pre_softmax
  EXPECT_EQ(config["tie_word_embeddings"], false);
  const auto tensors = read_hf_folder(out);
  EXPECT_EQ(tensors.at("model.layers.0.mlp.gate_proj.weight").shape,
            (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(tensors.at("model.layers.1.mlp.experts.0.down_proj.weight").shape,
            (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(tensors.at("model.layers.1.mlp.shared_expert.down_proj.weight").values,
            std::vector<float>(32, 0.0f));
  EXPECT_EQ(tensors.at("model.layers.1.self_attn.k_proj.bias").values, std::vector<float>(16, 0.0f));
  EXPECT_EQ(tensors.at("lm_head.weight").values, checkpoint_tensor(qwen_ckpt_, "lm_head"));
}

// q/k norms and head dim 12 (hidden 32, 4 heads): q_proj is 48 × 32, k/v_proj 24 × 32.
TEST_F(ExportHf, Qwen3MoeWithQkNormsAndOwnHeadDimRoundTrip) {
  const std::string out = dir_ + "/qwen3-hf";
  expect_round_trip(qwen3_ckpt_, HfFormat::kQwen3Moe, out);
  const nlohmann::json config = read_json_file(out + "/config.json");
  EXPECT_EQ(config["architectures"][0], "Qwen3MoeForCausalLM");
  EXPECT_EQ(config["model_type"], "qwen3_moe");
  EXPECT_EQ(config["head_dim"], 12);
  EXPECT_EQ(config["attention_bias"], false);
  EXPECT_EQ(config["mlp_only_layers"], nlohmann::json({0}));
  EXPECT_EQ(config["norm_topk_prob"], true);
  EXPECT_FALSE(config.contains("shared_expert_intermediate_size"));
  const auto tensors = read_hf_folder(out);
  EXPECT_EQ(tensors.size(), 1 + 2 * 8 + (3 + 1 + 4 * 3) + 1u);
  EXPECT_EQ(tensors.at("model.layers.1.self_attn.q_proj.weight").shape,
            (std::vector<int64_t>{48, 32}));
  EXPECT_EQ(tensors.at("model.layers.1.self_attn.o_proj.weight").shape,
            (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(tensors.at("model.layers.0.self_attn.q_norm.weight").values,
            checkpoint_tensor(qwen3_ckpt_, "layers/0/attn/q_norm"));
  EXPECT_EQ(tensors.at("model.layers.1.self_attn.k_norm.weight").values,
            checkpoint_tensor(qwen3_ckpt_, "layers/1/attn/k_norm"));
  EXPECT_NE(tensors.at("model.layers.1.self_attn.k_norm.weight").values,
            std::vector<float>(12, 1.0f)) << "trained, not the initial ones";
  EXPECT_EQ(tensors.at("model.layers.1.mlp.experts.3.up_proj.weight").values,
            checkpoint_tensor(qwen3_ckpt_, "layers/1/moe/experts/w_up", 3));
  EXPECT_FALSE(tensors.contains("model.layers.1.self_attn.q_proj.bias"));
  EXPECT_FALSE(tensors.contains("model.layers.1.mlp.shared_expert_gate.weight"));
}

std::string export_error(const std::string& ckpt, HfFormat format, const std::string& out) {
  auto result = export_to(ckpt, format, out);
  EXPECT_FALSE(fs::exists(out)) << "nothing may be written on a refusal";
  return result.ok() ? "" : std::string(result.status().message());
}

TEST_F(ExportHf, RefusesWhatAFormatHasNoPlaceFor) {
  const std::string out = dir_ + "/refused";
  EXPECT_EQ(export_error(default_ckpt_, HfFormat::kMixtral, out),
            "mixtral has no place for dense layers (layers 0 by moe.moe_layer_freq); every mixtral "
            "layer is MoE");
  EXPECT_NE(export_error(default_ckpt_, HfFormat::kQwen2Moe, out)
                .find("qwen2_moe has no place for an ungated shared expert"),
            std::string::npos);
  EXPECT_NE(export_error(mixtral_ckpt_, HfFormat::kOlmoe, out).find("olmoe normalises q and k"),
            std::string::npos);
  EXPECT_NE(export_error(qwen_ckpt_, HfFormat::kMixtral, out).find("dense layers"),
            std::string::npos);
  EXPECT_EQ(export_error(qwen_ckpt_, HfFormat::kQwen3Moe, out),
            "qwen3_moe normalises each query and key head (q_norm, k_norm) and this model does "
            "not: set model.qk_layernorm true, or use mixtral or qwen2_moe");
  EXPECT_EQ(export_error(qwen3_ckpt_, HfFormat::kQwen2Moe, out),
            "qwen2_moe has no place for a head dim other than hidden_size / num_attention_heads "
            "(model.kv_channels 12)");
  EXPECT_NE(export_error(dir_ + "/nowhere", HfFormat::kMixtral, out).find("nowhere"),
            std::string::npos);
  fs::create_directories(out);
  auto existing = export_to(mixtral_ckpt_, HfFormat::kMixtral, out);
  EXPECT_NE(existing.status().message().find("already exists"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(out));
}

TEST(HfFormat, RefusesRouterFeaturesWithoutAPlace) {
  ModelConfig c;
  c.moe.num_experts = 4;
  c.moe.moe_layer_pattern = {1, 1};
  EXPECT_TRUE(check_hf_compatible(c, HfFormat::kMixtral).ok());
  ModelConfig sigmoid = c;
  sigmoid.moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  EXPECT_NE(check_hf_compatible(sigmoid, HfFormat::kMixtral).message().find("a sigmoid router"),
            std::string::npos);
  ModelConfig groups = c;
  groups.moe.moe_router_num_groups = 2;
  EXPECT_NE(check_hf_compatible(groups, HfFormat::kQwen2Moe).message().find("group-limited"),
            std::string::npos);
  ModelConfig capacity = c;
  capacity.moe.moe_expert_capacity_factor = 1.5f;
  EXPECT_NE(check_hf_compatible(capacity, HfFormat::kMixtral).message().find("token dropping"),
            std::string::npos);
  ModelConfig scaled = c;
  scaled.moe.moe_router_topk_scaling_factor = 2.5f;
  EXPECT_NE(check_hf_compatible(scaled, HfFormat::kMixtral).message().find("scaling factor"),
            std::string::npos);
  ModelConfig pre = c;
  pre.moe.moe_router_pre_softmax = true;
  EXPECT_NE(check_hf_compatible(pre, HfFormat::kMixtral).message().find("without renormalisation"),
            std::string::npos);
  EXPECT_TRUE(check_hf_compatible(pre, HfFormat::kQwen2Moe).ok());
  ModelConfig qk = c;
  qk.qk_layernorm = true;
  EXPECT_EQ(check_hf_compatible(qk, HfFormat::kMixtral).message(),
            "mixtral has no place for q/k norms (model.qk_layernorm true); qwen3_moe has them");
  EXPECT_TRUE(check_hf_compatible(qk, HfFormat::kQwen3Moe).ok());
  qk.moe.moe_shared_expert_intermediate_size = 8;
  EXPECT_NE(check_hf_compatible(qk, HfFormat::kQwen3Moe).message().find("a shared expert"),
            std::string::npos);
  ModelConfig head_dim = c;
  head_dim.kv_channels = 2 * c.head_dim();  // mixtral's config.json carries head_dim
  EXPECT_TRUE(check_hf_compatible(head_dim, HfFormat::kMixtral).ok());
  EXPECT_EQ(*parse_hf_format("qwen3_moe"), HfFormat::kQwen3Moe);
  EXPECT_FALSE(parse_hf_format("llama").ok());
}

// ---- import refusals ----

std::string load_error(const std::string& hf, const std::string& ckpt) {
  std::unique_ptr<Trainer> trainer = fresh_trainer(ckpt);
  const absl::Status s = load_hf_checkpoint(hf, trainer->model().registry(), trainer->recipe().model);
  return s.ok() ? "" : std::string(s.message());
}

std::string copy_export(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

TEST_F(ExportHf, ImportRefusesDamagedFolders) {
  const std::string good = dir_ + "/import-good";
  ASSERT_TRUE(export_to(mixtral_ckpt_, HfFormat::kMixtral, good, 20'000).ok());
  EXPECT_EQ(load_error(good, mixtral_ckpt_), "");

  const std::string shard = "/model-00002-of-";
  const auto shard_path = [&](const std::string& dir) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().string().find(shard) != std::string::npos) return e.path().string();
    }
    return std::string();
  };
  const std::string truncated = copy_export(good, dir_ + "/import-truncated");
  fs::resize_file(shard_path(truncated), fs::file_size(shard_path(truncated)) - 100);
  EXPECT_NE(load_error(truncated, mixtral_ckpt_).find("the file holds only"), std::string::npos)
      << load_error(truncated, mixtral_ckpt_);

  const std::string missing = copy_export(good, dir_ + "/import-missing");
  fs::remove(shard_path(missing));
  EXPECT_NE(load_error(missing, mixtral_ckpt_).find(": missing shard (the index puts tensor '"),
            std::string::npos)
      << load_error(missing, mixtral_ckpt_);

  const std::string lying = copy_export(good, dir_ + "/import-lying");
  {  // the first tensor's end offset changes by 1: its size no longer matches dtype and shape
    std::fstream f(shard_path(lying), std::ios::in | std::ios::out | std::ios::binary);
    std::string head(4096, '\0');
    f.read(head.data(), head.size());
    const size_t at = head.find("\"data_offsets\":[0,");
    ASSERT_NE(at, std::string::npos);
    const size_t digit = head.find(']', at) - 1;
    head[digit] = static_cast<char>(head[digit] == '9' ? '8' : head[digit] + 1);
    f.seekp(0);
    f.write(head.data(), head.size());
  }
  EXPECT_NE(load_error(lying, mixtral_ckpt_).find("needs"), std::string::npos)
      << load_error(lying, mixtral_ckpt_);

  // The config names a different model than the recipe.
  const std::string other = copy_export(good, dir_ + "/import-config");
  nlohmann::json config = read_json_file(other + "/config.json");
  config["num_local_experts"] = 8;
  std::ofstream(other + "/config.json") << config.dump();
  EXPECT_EQ(load_error(other, mixtral_ckpt_),
            other + "/config.json: num_local_experts is 8, the recipe has 4 (moe.num_experts)");
  config["model_type"] = "olmoe";
  std::ofstream(other + "/config.json") << config.dump();
  EXPECT_NE(load_error(other, mixtral_ckpt_).find("olmoe normalises q and k"), std::string::npos);
  config["model_type"] = "llama";
  std::ofstream(other + "/config.json") << config.dump();
  EXPECT_EQ(load_error(other, mixtral_ckpt_),
            other + "/config.json: model_type 'llama' is not one moefold reads (mixtral, "
                    "qwen2_moe, qwen3_moe)");
}

TEST_F(ExportHf, ImportRefusesAMismatchedTensorShape) {
  // A folder whose config matches but one expert matrix has the wrong shape.
  const std::string good = dir_ + "/shape-good";
  ASSERT_TRUE(export_to(mixtral_ckpt_, HfFormat::kMixtral, good).ok());
  const std::string bad = dir_ + "/shape-bad";
  fs::create_directories(bad);
  fs::copy_file(good + "/config.json", bad + "/config.json");
  std::vector<SafetensorsEntry> entries;
  for (const auto& [name, t] : read_hf_folder(good)) {
    std::vector<int64_t> shape = t.shape;
    if (name == "model.layers.1.block_sparse_moe.experts.2.w2.weight") shape = {32, 16};
    entries.push_back({name, SafetensorsDType::kF32, shape});
  }
  int64_t numel = 0;
  for (const auto& e : entries) numel += e.numel();
  auto writer = ShardedSafetensorsWriter::create(bad, entries, 5'000'000'000);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(writer->append(std::vector<float>(numel, 0.0f)).ok());
  ASSERT_TRUE(writer->finish().ok());
  EXPECT_EQ(load_error(bad, mixtral_ckpt_),
            bad + "/model-00001-of-00001.safetensors: tensor "
                  "'model.layers.1.block_sparse_moe.experts.2.w2.weight' has shape [32, 16], the "
                  "recipe's model needs [32, 32]");
}

TEST_F(ExportHf, ImportRefusesNonZeroQwenBiases) {
  const std::string good = dir_ + "/bias-good";
  ASSERT_TRUE(export_to(qwen_ckpt_, HfFormat::kQwen2Moe, good).ok());
  const std::string bad = dir_ + "/bias-bad";
  fs::create_directories(bad);
  fs::copy_file(good + "/config.json", bad + "/config.json");
  std::vector<SafetensorsEntry> entries;
  std::vector<float> values;
  for (const auto& [name, t] : read_hf_folder(good)) {
    entries.push_back({name, SafetensorsDType::kF32, t.shape});
    values.insert(values.end(), t.values.begin(), t.values.end());
    if (name == "model.layers.0.self_attn.q_proj.bias") values.back() = 0.5f;
  }
  auto writer = ShardedSafetensorsWriter::create(bad, entries, 5'000'000'000);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(writer->append(values).ok());
  ASSERT_TRUE(writer->finish().ok());
  EXPECT_NE(load_error(bad, qwen_ckpt_).find("tensor 'model.layers.0.self_attn.q_proj.bias' is "
                                             "not zero"),
            std::string::npos)
      << load_error(bad, qwen_ckpt_);
}

// Published checkpoints are mostly bfloat16: a single model.safetensors in BF16 (written here by
// hand from the export's values, their upper 16 bits) loads as exactly those values in float32.
TEST_F(ExportHf, ImportReadsBf16) {
  const std::string f32 = dir_ + "/bf16-source";
  ASSERT_TRUE(export_to(mixtral_ckpt_, HfFormat::kMixtral, f32).ok());
  const std::string bf16 = dir_ + "/bf16";
  fs::create_directories(bf16);
  fs::copy_file(f32 + "/config.json", bf16 + "/config.json");
  const auto tensors = read_hf_folder(f32);
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  std::map<std::string, std::vector<float>> rounded;
  for (const auto& [name, t] : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      const uint16_t high = static_cast<uint16_t>(bits >> 16);
      data.append(reinterpret_cast<const char*>(&high), 2);
      const uint32_t back = static_cast<uint32_t>(high) << 16;
      float f;
      std::memcpy(&f, &back, 4);
      rounded[name].push_back(f);
    }
    header[name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  const uint64_t length = text.size();
  std::ofstream out(bf16 + "/model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << text << data;
  out.close();

  std::unique_ptr<Trainer> trainer = fresh_trainer(mixtral_ckpt_);
  const absl::Status loaded =
      load_hf_checkpoint(bf16, trainer->model().registry(), trainer->recipe().model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  const Parameter* wk = trainer->model().registry().find("layers/1/attn/wk");
  const std::vector<float>& want = rounded.at("model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(std::vector<float>(wk->value.data(), wk->value.data() + want.size()), want);
  const Parameter* w_up = trainer->model().registry().find("layers/0/moe/experts/w_up");
  const std::vector<float>& up3 = rounded.at("model.layers.0.block_sparse_moe.experts.3.w3.weight");
  const float* expert3 = w_up->value.data() + 3 * up3.size();
  EXPECT_EQ(std::vector<float>(expert3, expert3 + up3.size()), up3);
}

}  // namespace
}  // namespace moefold::testing
