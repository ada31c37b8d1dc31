#include "interop/load_hf.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "interop/hf_format.h"
#include "interop/sharded_safetensors.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<nlohmann::json> read_config(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::DataLossError(path.string() + ": not valid JSON");
  return config;
}

// Every tensor of the plan is there with its shape, nothing else is, and the zero ones are zero.
absl::Status check_tensors(const ShardedSafetensorsReader& reader,
                           const std::vector<HfTensor>& plan, const std::string& dir) {
  std::set<std::string> planned;
  for (const HfTensor& t : plan) {
    planned.insert(t.hf_name);
    const auto located = reader.find(t.hf_name);
    if (!located) {
      return absl::NotFoundError(absl::StrCat(dir, ": tensor '", t.hf_name,
                                              "' is missing (the recipe's model needs it)"));
    }
    if (located->entry->shape != t.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          located->file->path(), ": tensor '", t.hf_name, "' has shape ",
          shape_text(located->entry->shape), ", the recipe's model needs ", shape_text(t.shape)));
    }
    if (t.source.empty()) {
      std::vector<float> values(static_cast<size_t>(located->entry->numel()));
      const std::vector<int64_t> zero(t.shape.size(), 0);
      if (absl::Status s = located->file->read_box(t.hf_name, zero, t.shape, values.data());
          !s.ok()) {
        return s;
      }
      for (float v : values) {
        if (v != 0.0f) {
          return absl::FailedPreconditionError(absl::StrCat(
              located->file->path(), ": tensor '", t.hf_name, "' is not zero, and moefold's model "
              "has no such term (no biases, no gated shared expert)"));
        }
      }
    }
  }
  for (const std::string& name : reader.tensor_names()) {
    if (!planned.contains(name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": tensor '", name, "' has no place in the recipe's model"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status load_hf_checkpoint(const std::string& dir, const ParameterRegistry& registry,
                                const ModelConfig& expected, LoadHfStats* stats) {
  const fs::path config_path = fs::path(dir) / "config.json";
  auto config = read_config(config_path);
  if (!config.ok()) return config.status();
  auto format = check_hf_config(*config, config_path.string(), expected);
  if (!format.ok()) return format.status();
  auto reader = ShardedSafetensorsReader::open(dir);
  if (!reader.ok()) return reader.status();
  const std::vector<HfTensor> plan = hf_tensor_plan(expected, *format);
  if (absl::Status s = check_tensors(*reader, plan, dir); !s.ok()) return s;

  // source name → its HF tensors, by expert index (-1: the whole tensor).
  std::map<std::string, std::map<int, const HfTensor*>> sources;
  for (const HfTensor& t : plan) {
    if (!t.source.empty()) sources[t.source][t.expert] = &t;
  }
  // Values are read into host memory: the tensor's own on the CPU, else a host buffer copied to
  // its device once every read succeeded.
  struct Target {
    Target(const TensorLayout& layout, const Tensor& value)
        : layout(&layout),
          value(value),
          staged(value.device() == Device::kCpu ? 0 : static_cast<size_t>(value.numel())) {}
    float* data() { return staged.empty() ? value.data() : staged.data(); }

    const TensorLayout* layout;
    Tensor value;
    std::vector<float> staged;  // empty on the CPU
  };
  std::vector<Target> targets;
  for (const auto& p : registry.parameters()) targets.emplace_back(p->layout, p->value);
  for (const auto& b : registry.buffers()) targets.emplace_back(b->layout, b->value);
  for (const Target& target : targets) {
    if (!sources.contains(target.layout->name)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, ": the model's tensor '", target.layout->name, "' has no source in ",
          hf_format_name(*format)));
    }
  }

  int64_t bytes = 0;
  for (Target& target : targets) {
    const TensorLayout& layout = *target.layout;
    const auto& by_expert = sources.at(layout.name);
    if (by_expert.contains(-1)) {  // one HF tensor at the same global shape
      const HfTensor& t = *by_expert.at(-1);
      MOEFOLD_CHECK(t.shape == layout.global_shape, layout.name << " vs " << t.hf_name);
      const auto located = reader->find(t.hf_name);
      if (absl::Status s = located->file->read_box(t.hf_name, layout.local_offset,
                                                   layout.local_shape, target.data());
          !s.ok()) {
        return s;
      }
      bytes += layout.local_numel() * 4;
      continue;
    }
    // [E, ...]: this rank's experts, each its own HF tensor, each read in its local box.
    const std::vector<int64_t> offset(layout.local_offset.begin() + 1, layout.local_offset.end());
    const std::vector<int64_t> shape(layout.local_shape.begin() + 1, layout.local_shape.end());
    int64_t per_expert = 1;
    for (int64_t d : shape) per_expert *= d;
    for (int64_t e = 0; e < layout.local_shape[0]; ++e) {
      const int expert = static_cast<int>(layout.local_offset[0] + e);
      MOEFOLD_CHECK(by_expert.contains(expert), layout.name << " expert " << expert);
      const HfTensor& t = *by_expert.at(expert);
      const auto located = reader->find(t.hf_name);
      if (absl::Status s = located->file->read_box(t.hf_name, offset, shape,
                                                   target.data() + e * per_expert);
          !s.ok()) {
        return s;
      }
      bytes += per_expert * 4;
    }
  }
  for (const Target& target : targets) {
    if (!target.staged.empty()) {
      ops::copy_memory(target.value.raw_data(), target.staged.data(),
                       target.staged.size() * sizeof(float));
    }
  }
  if (stats != nullptr) {
    stats->bytes_read = bytes;
    stats->format = hf_format_name(*format);
  }
  return absl::OkStatus();
}

}  // namespace moefold
