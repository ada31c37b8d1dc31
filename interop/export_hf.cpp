#include "interop/export_hf.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/config_attributes.h"
#include "checkpoint/hdf5_file.h"
#include "interop/hf_tokenizer_files.h"
#include "interop/sharded_safetensors.h"
#include "trainer/config_parse.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

// The recipe stored in meta.json: it names the tokenizer, and its model section must be the one
// model.h5's attributes describe.
absl::StatusOr<Recipe> checkpoint_recipe(const fs::path& dir) {
  const fs::path meta_path = dir / kMetaFile;
  std::ifstream in(meta_path);
  const nlohmann::json meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.contains("recipe") || !meta["recipe"].is_string()) {
    return absl::DataLossError(absl::StrCat(meta_path.string(), ": no recipe in it"));
  }
  return parse_recipe_string(meta["recipe"].get<std::string>(), meta_path.string() + ":recipe");
}

absl::Status write_json(const fs::path& path, const nlohmann::ordered_json& value) {
  std::ofstream out(path);
  out << value.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

// Every dataset of model.h5 must have a place in the plan, and every source its shape.
absl::Status check_sources(const Hdf5File& file, const std::vector<HfTensor>& plan,
                           const ModelConfig& config, HfFormat format) {
  std::set<std::string> used;
  for (const HfTensor& t : plan) {
    if (t.source.empty()) continue;
    used.insert(t.source);
    auto shape = file.dataset_shape(t.source);
    if (!shape.ok()) return shape.status();
    std::vector<int64_t> want = t.shape;  // an expert's matrix is one slice of [E, ...]
    if (t.expert >= 0) want.insert(want.begin(), config.moe.num_experts);
    if (*shape != want) {
      return absl::DataLossError(absl::StrCat(
          file.path(), ": tensor '", t.source, "' has shape [", absl::StrJoin(*shape, ", "),
          "], its model config implies [", absl::StrJoin(want, ", "), "]"));
    }
  }
  auto names = file.list_datasets();
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    if (!used.contains(name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          file.path(), ": tensor '", name, "' has no place in ", hf_format_name(format)));
    }
  }
  return absl::OkStatus();
}

// Streams every tensor of the plan from model.h5 into the shards.
absl::Status write_weights(Hdf5File& file, const std::vector<HfTensor>& plan,
                           const std::string& dir, int64_t max_shard_bytes, int* shards) {
  std::vector<SafetensorsEntry> entries;
  for (const HfTensor& t : plan) entries.push_back({t.hf_name, SafetensorsDType::kF32, t.shape});
  auto writer = ShardedSafetensorsWriter::create(dir, std::move(entries), max_shard_bytes);
  if (!writer.ok()) return writer.status();
  std::vector<float> buffer;
  for (const HfTensor& t : plan) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    buffer.assign(static_cast<size_t>(numel), 0.0f);
    if (!t.source.empty()) {
      HyperslabF32 box{std::vector<int64_t>(t.shape.size(), 0), t.shape, buffer.data()};
      if (t.expert >= 0) {
        box.offset.insert(box.offset.begin(), t.expert);
        box.shape.insert(box.shape.begin(), 1);
      }
      if (absl::Status s = file.read(t.source, &box); !s.ok()) return s;
    }
    if (absl::Status s = writer->append(buffer); !s.ok()) return s;
  }
  *shards = writer->num_shards();
  return writer->finish();
}

absl::Status export_into(const fs::path& staging, const ExportHfOptions& options,
                         ExportHfResult* result) {
  auto dir = resolve_checkpoint_dir(options.checkpoint);
  if (!dir.ok()) return dir.status();
  auto recipe = checkpoint_recipe(*dir);
  if (!recipe.ok()) return recipe.status();
  const ModelConfig& config = recipe->model;
  if (absl::Status s = check_hf_compatible(config, options.format); !s.ok()) return s;
  auto file = Hdf5File::open((fs::path(*dir) / kModelFile).string(), MPI_COMM_NULL);
  if (!file.ok()) return file.status();
  if (absl::Status s = check_model_config(*file, config); !s.ok()) return s;
  const std::vector<HfTensor> plan = hf_tensor_plan(config, options.format);
  if (absl::Status s = check_sources(*file, plan, config, options.format); !s.ok()) return s;

  fs::create_directories(staging);
  if (absl::Status s = write_weights(*file, plan, staging.string(), options.max_shard_bytes,
                                     &result->shards);
      !s.ok()) {
    return s;
  }
  for (const HfTensor& t : plan) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    result->bytes += numel * 4;
  }
  result->tensors = static_cast<int64_t>(plan.size());

  auto tokenizer = write_hf_tokenizer_files(recipe->data, config, staging.string());
  if (!tokenizer.ok()) return tokenizer.status();
  result->notes.push_back(tokenizer->note);
  if (absl::Status s = write_json(staging / "config.json",
                                  hf_config_json(config, options.format, tokenizer->ids));
      !s.ok()) {
    return s;
  }
  nlohmann::ordered_json generation = {{"_from_model_config", true}};
  if (tokenizer->ids.bos >= 0) generation["bos_token_id"] = tokenizer->ids.bos;
  if (tokenizer->ids.eos >= 0) generation["eos_token_id"] = tokenizer->ids.eos;
  return write_json(staging / "generation_config.json", generation);
}

}  // namespace

absl::StatusOr<ExportHfResult> export_hf(const ExportHfOptions& options) {
  fs::path output = fs::path(options.output).lexically_normal();
  if (!output.empty() && output.filename().empty()) output = output.parent_path();  // "dir/"
  if (output.empty()) return absl::InvalidArgumentError("--output DIR is required");
  std::error_code ec;
  if (fs::exists(output, ec)) {
    return absl::AlreadyExistsError(
        absl::StrCat(output.string(), ": already exists; export-hf writes a new folder only"));
  }
  const fs::path staging = output.string() + ".partial-" + std::to_string(::getpid());
  fs::remove_all(staging, ec);
  ExportHfResult result;
  absl::Status status = export_into(staging, options, &result);
  if (status.ok()) {
    fs::rename(staging, output, ec);
    if (ec) {
      status = absl::DataLossError(
          absl::StrCat(output.string(), ": rename from ", staging.string(), " failed: ", ec.message()));
    }
  }
  if (!status.ok()) {
    fs::remove_all(staging, ec);
    return status;
  }
  return result;
}

}  // namespace moefold
