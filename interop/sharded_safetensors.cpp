#include "interop/sharded_safetensors.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold {
namespace fs = std::filesystem;

absl::StatusOr<ShardedSafetensorsWriter> ShardedSafetensorsWriter::create(
    const std::string& dir, std::vector<SafetensorsEntry> tensors, int64_t max_shard_bytes) {
  ShardedSafetensorsWriter out;
  out.dir_ = dir;
  for (SafetensorsEntry& t : tensors) {
    const int64_t bytes = t.numel() * safetensors_dtype_bytes(t.dtype);
    if (out.shards_.empty() ||
        (!out.shards_.back().tensors.empty() &&
         out.shards_.back().data_bytes + bytes > max_shard_bytes)) {
      out.shards_.emplace_back();
    }
    out.shards_.back().tensors.push_back(std::move(t));
    out.shards_.back().data_bytes += bytes;
  }
  if (out.shards_.empty()) return absl::InvalidArgumentError("no tensors to write");
  const int n = static_cast<int>(out.shards_.size());
  for (int i = 0; i < n; ++i) {
    out.shards_[i].file = absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, n);
  }
  if (absl::Status s = out.open_next_shard(); !s.ok()) return s;
  return out;
}

absl::Status ShardedSafetensorsWriter::open_next_shard() {
  const Shard& shard = shards_[current_];
  auto writer = SafetensorsWriter::create((fs::path(dir_) / shard.file).string(), shard.tensors);
  if (!writer.ok()) return writer.status();
  writer_.emplace(std::move(*writer));
  left_in_shard_ = shard.data_bytes;
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::append(std::span<const float> values) {
  while (!values.empty()) {
    while (left_in_shard_ == 0) {  // the shard is complete (or holds only empty tensors)
      if (absl::Status s = writer_->finish(); !s.ok()) return s;
      if (++current_ == shards_.size()) {
        return absl::InternalError(absl::StrCat(dir_, ": more data than the tensors declared"));
      }
      if (absl::Status s = open_next_shard(); !s.ok()) return s;
    }
    const size_t take = std::min(values.size(), static_cast<size_t>(left_in_shard_ / 4));
    if (absl::Status s = writer_->append(values.first(take)); !s.ok()) return s;
    left_in_shard_ -= static_cast<int64_t>(take) * 4;
    values = values.subspan(take);
  }
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::finish() {
  while (true) {
    if (absl::Status s = writer_->finish(); !s.ok()) return s;
    if (++current_ == shards_.size()) break;
    if (absl::Status s = open_next_shard(); !s.ok()) return s;  // shards of empty tensors only
  }
  nlohmann::ordered_json index;
  int64_t total = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (const Shard& shard : shards_) {
    total += shard.data_bytes;
    for (const SafetensorsEntry& t : shard.tensors) weight_map[t.name] = shard.file;
  }
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = std::move(weight_map);
  const std::string path = (fs::path(dir_) / kSafetensorsIndexFile).string();
  std::ofstream out(path);
  out << index.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<ShardedSafetensorsReader> ShardedSafetensorsReader::open(const std::string& dir) {
  ShardedSafetensorsReader reader;
  const fs::path index_path = fs::path(dir) / kSafetensorsIndexFile;
  std::map<std::string, std::vector<std::string>> tensors_of_file;  // from the index
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    const nlohmann::json index = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::DataLossError(
          absl::StrCat(index_path.string(), ": not a JSON object with a \"weight_map\" object"));
    }
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return absl::DataLossError(absl::StrCat(index_path.string(), ": weight_map[\"", name,
                                                "\"] is not a file name in the folder"));
      }
      tensors_of_file[file.get<std::string>()].push_back(name);
    }
  } else if (fs::exists(fs::path(dir) / kSingleSafetensorsFile)) {
    tensors_of_file[kSingleSafetensorsFile] = {};
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither ", kSafetensorsIndexFile, " nor ",
                                            kSingleSafetensorsFile, " is there"));
  }
  for (const auto& [file_name, names] : tensors_of_file) {
    const std::string path = (fs::path(dir) / file_name).string();
    if (!fs::exists(path)) {
      return absl::NotFoundError(absl::StrCat(path, ": missing shard (the index puts tensor '",
                                              names.front(), "' in it)"));
    }
    auto file = SafetensorsFile::open(path);
    if (!file.ok()) return file.status();
    reader.files_.push_back(std::make_unique<SafetensorsFile>(std::move(*file)));
    const SafetensorsFile* mapped = reader.files_.back().get();
    for (const std::string& name : names) {
      if (mapped->find(name) == nullptr) {
        return absl::DataLossError(absl::StrCat(path, ": the index puts tensor '", name,
                                                "' in this shard, but it is not there"));
      }
    }
    for (const auto& [name, entry] : mapped->entries()) {
      const auto placed = reader.tensors_.find(name);
      if (placed != reader.tensors_.end()) {
        return absl::DataLossError(absl::StrCat(path, ": tensor '", name, "' is also in ",
                                                placed->second.file->path()));
      }
      reader.tensors_[name] = {mapped, &entry};
    }
  }
  return reader;
}

std::optional<ShardedSafetensorsReader::Located> ShardedSafetensorsReader::find(
    const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> ShardedSafetensorsReader::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, located] : tensors_) names.push_back(name);
  return names;
}

}  // namespace moefold
