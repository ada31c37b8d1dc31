#include "checkpoint/inspect.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/verify.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

// "layers/2/..." before "layers/10/...": digit runs compare as numbers.
bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) &&
        std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t ei = i, ej = j;
      while (ei < a.size() && std::isdigit(static_cast<unsigned char>(a[ei]))) ++ei;
      while (ej < b.size() && std::isdigit(static_cast<unsigned char>(b[ej]))) ++ej;
      const std::string na = a.substr(i, ei - i), nb = b.substr(j, ej - j);
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = ei;
      j = ej;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

// One line per tensor: name, shape, elements; then the total.
absl::Status append_tensors(const std::string& path, std::string* out) {
  auto file = Hdf5File::open(path, MPI_COMM_NULL);
  if (!file.ok()) return file.status();
  auto names = file->list_datasets();
  if (!names.ok()) return names.status();
  std::sort(names->begin(), names->end(), natural_less);
  size_t width = 0;
  for (const std::string& name : *names) width = std::max(width, name.size());
  int64_t total = 0;
  std::string lines;
  for (const std::string& name : *names) {
    auto shape = file->dataset_shape(name);
    if (!shape.ok()) return shape.status();
    int64_t numel = 1;
    for (int64_t d : *shape) numel *= d;
    total += numel;
    absl::StrAppendFormat(&lines, "  %-*s  [%s]  %d\n", static_cast<int>(width), name,
                          absl::StrJoin(*shape, ", "), numel);
  }
  std::error_code ec;
  absl::StrAppendFormat(out, "%s (%d bytes): %d tensors, %d elements\n",
                        fs::path(path).filename().string(),
                        static_cast<int64_t>(fs::file_size(path, ec)), names->size(), total);
  auto attributes = file->list_attributes();
  if (!attributes.ok()) return attributes.status();
  for (const std::string& name : *attributes) {
    auto value = file->read_attribute(name);
    if (!value.ok()) return value.status();
    absl::StrAppend(out, "  @", name, " = ", format_attribute(*value), "\n");
  }
  absl::StrAppend(out, lines);
  return file->close();
}

}  // namespace

absl::StatusOr<std::string> inspect_checkpoint(const std::string& path) {
  auto dir = resolve_checkpoint_dir(path);
  if (!dir.ok()) return dir.status();
  const fs::path root(*dir);
  const std::string meta_path = (root / kMetaFile).string();
  std::ifstream in(meta_path);
  const nlohmann::json meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!in || meta.is_discarded() || !meta.is_object()) {
    return absl::DataLossError(meta_path + ": missing or not valid JSON");
  }
  const auto field = [&](const char* key) {
    return meta.contains(key)
               ? (meta[key].is_string() ? meta[key].get<std::string>() : meta[key].dump())
               : std::string("?");
  };
  std::string out = absl::StrCat("checkpoint: ", *dir, "\n");
  absl::StrAppend(&out, "iteration: ", field("iteration"), "\n");
  absl::StrAppend(&out, "consumed samples: ", field("consumed_samples"), "\n");
  absl::StrAppend(&out, "optimizer steps: ", field("optimizer_steps"), "\n");
  std::string layout = field("layout");
  if (meta.contains("layout") && meta["layout"].is_object()) {
    const nlohmann::json& l = meta["layout"];
    layout = absl::StrCat("world size ", l.value("world_size", 0));
    for (const char* axis : {"tp", "cp", "pp", "dp", "ep", "etp", "edp"}) {
      absl::StrAppend(&layout, " ", absl::AsciiStrToUpper(axis), "=", l.value(axis, 0));
    }
  }
  absl::StrAppend(&out, "written by: moefold ", field("moefold_version"), ", ", layout, "\n\n");
  if (absl::Status s = append_tensors((root / kModelFile).string(), &out); !s.ok()) return s;
  std::error_code ec;
  if (fs::exists(root / kOptimFile, ec)) {
    absl::StrAppend(&out, "\n");
    if (absl::Status s = append_tensors((root / kOptimFile).string(), &out); !s.ok()) return s;
  }
  absl::StrAppend(&out, "\nrecipe:\n", field("recipe"), "\n");
  return out;
}

int run_ckpt_command(int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: moefold ckpt inspect PATH   a checkpoint's iteration, tensors, config and recipe\n"
      "       moefold ckpt verify PATH    every tensor's checksum against meta.json\n"
      "PATH: a save directory (through its `latest`) or an iter_N directory\n";
  if (argc >= 1 && (std::strcmp(argv[0], "--help") == 0 || std::strcmp(argv[0], "-h") == 0)) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const bool inspect = argc == 2 && std::strcmp(argv[0], "inspect") == 0;
  const bool verify = argc == 2 && std::strcmp(argv[0], "verify") == 0;
  if (!inspect && !verify) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto text = inspect ? inspect_checkpoint(argv[1]) : verify_checkpoint(argv[1]);
  if (!text.ok()) {
    std::fprintf(stderr, "moefold ckpt: error: %s\n", std::string(text.status().message()).c_str());
    return 1;
  }
  std::fputs(text->c_str(), stdout);
  if (verify) std::fputs("\n", stdout);
  return 0;
}

}  // namespace moefold
