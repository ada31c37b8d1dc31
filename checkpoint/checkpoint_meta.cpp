#include "checkpoint/checkpoint_meta.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/tensor_checksum.h"

#ifndef MOEFOLD_VERSION
#define MOEFOLD_VERSION "unknown"
#endif

namespace moefold {

std::string meta_json(const CheckpointState& state, int64_t optimizer_steps,
                      const ParallelContext& ctx, int64_t model_bytes, int64_t optim_bytes,
                      const Checksums& checksums) {
  const RankCoordinates& c = ctx.coords;
  nlohmann::ordered_json meta;
  meta["iteration"] = state.iteration;
  meta["consumed_samples"] = state.consumed_samples;
  if (optimizer_steps >= 0) meta["optimizer_steps"] = optimizer_steps;  // -1: no optimizer
  meta["lr_scheduler"] = {{"iteration", state.iteration}};
  meta["moefold_version"] = MOEFOLD_VERSION;
  meta["layout"] = {{"world_size", c.world_size},
                    {"tp", c.tp_size},
                    {"cp", c.cp_size},
                    {"pp", c.pp_size},
                    {"dp", c.dp_size},
                    {"ep", c.ep_size},
                    {"etp", c.etp_size},
                    {"edp", c.edp_size},
                    {"order", ctx.config.order},
                    {"use_distributed_optimizer", ctx.config.use_distributed_optimizer}};
  meta["files"] = nlohmann::ordered_json::object();
  meta["files"][kModelFile] = model_bytes;
  if (optimizer_steps >= 0) meta["files"][kOptimFile] = optim_bytes;
  meta["checksums"] = nlohmann::ordered_json::object();
  for (const auto& [file, tensors] : checksums) {
    for (const auto& [name, value] : tensors) meta["checksums"][file][name] = format_checksum(value);
  }
  meta["recipe"] = state.recipe_text;
  return meta.dump(2) + "\n";
}

absl::StatusOr<CheckpointMeta> parse_meta(const std::string& text, const std::string& path) {
  const nlohmann::json meta = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded() || !meta.is_object()) {
    return absl::DataLossError(path + ": not valid JSON (truncated or corrupt)");
  }
  for (const char* key : {"iteration", "consumed_samples"}) {
    if (!meta.contains(key) || !meta[key].is_number_integer()) {
      return absl::DataLossError(absl::StrCat(path, ": missing integer '", key, "'"));
    }
  }
  CheckpointMeta out;
  CheckpointState& state = out.state;
  state.iteration = meta["iteration"].get<int64_t>();
  state.consumed_samples = meta["consumed_samples"].get<int64_t>();
  if (meta.contains("recipe") && meta["recipe"].is_string()) {
    state.recipe_text = meta["recipe"].get<std::string>();
  }
  if (meta.contains("checksums")) {
    const nlohmann::json& files = meta["checksums"];
    if (!files.is_object()) return absl::DataLossError(path + ": 'checksums' is not an object");
    for (const auto& [file, tensors] : files.items()) {
      if (!tensors.is_object()) {
        return absl::DataLossError(absl::StrCat(path, ": checksums of ", file, " are not an object"));
      }
      for (const auto& [name, recorded] : tensors.items()) {
        const std::optional<uint64_t> value =
            recorded.is_string() ? parse_checksum(recorded.get<std::string>()) : std::nullopt;
        if (!value) {
          return absl::DataLossError(
              absl::StrCat(path, ": the checksum of ", file, " tensor '", name, "' is malformed"));
        }
        out.checksums[file][name] = *value;
      }
    }
  }
  return out;
}

absl::StatusOr<CheckpointMeta> read_meta(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(path + ": no such file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_meta(text.str(), path);
}

}  // namespace moefold
