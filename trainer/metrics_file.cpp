#include "trainer/metrics_file.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moefold {
namespace fs = std::filesystem;
namespace {

// The iteration of a moefold record ({"kind": "train" | "eval", "iteration": N, ...}), or -1.
int64_t record_iteration(const std::string& line) {
  const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded() || !record.is_object()) return -1;
  const auto kind = record.find("kind");
  const auto iteration = record.find("iteration");
  if (kind == record.end() || !kind->is_string() || iteration == record.end() ||
      !iteration->is_number_integer()) {
    return -1;
  }
  if (*kind != "train" && *kind != "eval") return -1;
  return iteration->get<int64_t>();
}

absl::Status refuse(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat(
      "logging.metrics_path ", path, ": ", why,
      "; refusing to overwrite it (pick another path or remove it yourself)"));
}

}  // namespace

absl::Status prepare_metrics_file(const std::string& path, int64_t keep_through) {
  std::error_code ec;
  const fs::path file(path);
  if (file.has_parent_path()) {
    const fs::path dir = file.parent_path();
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "logging: ", dir.string(), " (the metrics file's directory) exists and is not a directory"));
    }
    fs::create_directories(dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("logging: cannot create ", dir.string(), ": ", ec.message()));
    }
  }
  std::vector<std::string> kept;
  const fs::file_status status = fs::symlink_status(file, ec);
  if (fs::exists(status)) {
    if (fs::is_directory(status)) return refuse(path, "is a directory");
    if (!fs::is_regular_file(status)) return refuse(path, "is not a regular file");
    std::ifstream in(path);
    if (!in) return absl::UnavailableError(absl::StrCat("logging.metrics_path ", path, ": cannot read"));
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      const int64_t iteration = record_iteration(line);
      if (iteration < 0) {
        return refuse(path, absl::StrCat("line ", number, " is not a moefold metrics record"));
      }
      if (iteration <= keep_through) kept.push_back(line);
    }
  }
  // Rewritten through a temporary file, so a crash here leaves the old record or the new one.
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    for (const std::string& line : kept) out << line << '\n';
    out.flush();
    if (!out) {
      return absl::UnavailableError(absl::StrCat("logging.metrics_path ", path, ": cannot write ",
                                                 temporary));
    }
  }
  fs::rename(temporary, file, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("logging.metrics_path ", path, ": cannot replace: ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace moefold
