#include "checkpoint/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold {
namespace fs = std::filesystem;

absl::Status errno_error(const std::string& path, const char* what) {
  const int code = errno;
  const char* name = strerrorname_np(code);
  return absl::UnavailableError(absl::StrCat(path, ": ", what, ": ", std::strerror(code), " (",
                                             name ? name : "errno", " ", code, ")"));
}

namespace {

absl::Status fs_error(const std::string& path, const std::string& what, const std::error_code& ec) {
  return absl::UnavailableError(absl::StrCat(path, ": ", what, ": ", ec.message()));
}

// fsync of a file or a directory (a directory's entry list is what rename changes).
absl::Status fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno_error(path, "cannot open for fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_error(path, "fsync failed");
  return absl::OkStatus();
}

// Iteration N when `name` is exactly "iter_" followed by 7 or more digits.
bool parse_iteration_dir(const std::string& name, int64_t* iteration) {
  const std::string prefix = "iter_";
  if (name.size() < prefix.size() + 7 || name.compare(0, prefix.size(), prefix) != 0) {
    return false;
  }
  const std::string digits = name.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  return absl::SimpleAtoi(digits, iteration);
}

}  // namespace

std::string iteration_dir_name(int64_t iteration) {
  return absl::StrFormat("iter_%07d", iteration);
}

absl::StatusOr<int64_t> read_latest(const std::string& save_dir) {
  const std::string path = (fs::path(save_dir) / kLatestFile).string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(path + ": no such file");
  std::stringstream text;
  text << in.rdbuf();
  const std::string content(absl::StripAsciiWhitespace(text.str()));
  int64_t iteration = 0;
  if (!absl::SimpleAtoi(content, &iteration) || iteration < 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": expected the last saved iteration number, got '",
        absl::CHexEscape(content.substr(0, 40)), "'"));
  }
  return iteration;
}

absl::StatusOr<std::string> resolve_checkpoint_dir(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return absl::NotFoundError(path + ": no such directory");
  if (fs::exists(fs::path(path) / kMetaFile, ec)) return path;
  if (!fs::exists(fs::path(path) / kLatestFile, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": not a checkpoint: neither ", kLatestFile,
                                            " nor ", kMetaFile, " is there"));
  }
  auto iteration = read_latest(path);
  if (!iteration.ok()) return iteration.status();
  const std::string dir = (fs::path(path) / iteration_dir_name(*iteration)).string();
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat(path, "/", kLatestFile, " names iteration ", *iteration,
                                            " but ", dir, " is missing"));
  }
  return dir;
}

std::vector<int64_t> list_checkpoints(const std::string& save_dir) {
  std::vector<int64_t> iterations;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(save_dir, ec)) {
    int64_t iteration = 0;
    if (entry.is_directory(ec) &&
        parse_iteration_dir(entry.path().filename().string(), &iteration)) {
      iterations.push_back(iteration);
    }
  }
  std::sort(iterations.begin(), iterations.end());
  return iterations;
}

absl::StatusOr<std::string> prepare_staging_dir(const std::string& save_dir, int64_t iteration) {
  const std::string staging =
      (fs::path(save_dir) / (iteration_dir_name(iteration) + ".tmp")).string();
  std::error_code ec;
  fs::create_directories(save_dir, ec);
  if (ec) return fs_error(save_dir, "cannot create the save directory", ec);
  fs::remove_all(staging, ec);
  if (ec) return fs_error(staging, "cannot remove a crashed save's leftovers", ec);
  fs::create_directory(staging, ec);
  if (ec) return fs_error(staging, "cannot create", ec);
  return staging;
}

absl::Status reserve_file_space(const std::string& path, int64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) return errno_error(path, "cannot open to reserve space");
  const int rc = ::fallocate(fd, 0, 0, static_cast<off_t>(bytes));
  const int error = errno;
  ::close(fd);
  if (rc == 0 || error == EOPNOTSUPP || error == ENOSYS) return absl::OkStatus();
  errno = error;
  return errno_error(path, absl::StrCat("cannot reserve ", bytes, " bytes for the checkpoint").c_str());
}

void remove_staging_dir(const std::string& staging) {
  std::error_code ec;
  fs::remove_all(staging, ec);
}

absl::Status write_file_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return errno_error(path, "cannot create");
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return errno_error(path, "write failed");
    }
    written += static_cast<size_t>(n);
  }
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return errno_error(path, "fsync failed");
  return absl::OkStatus();
}

absl::Status commit_checkpoint(const std::string& save_dir, int64_t iteration) {
  const fs::path final_dir = fs::path(save_dir) / iteration_dir_name(iteration);
  const fs::path staging = fs::path(save_dir) / (iteration_dir_name(iteration) + ".tmp");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(staging, ec)) {
    if (absl::Status s = fsync_path(entry.path().string()); !s.ok()) return s;
  }
  if (ec) return fs_error(staging.string(), "cannot list", ec);
  if (absl::Status s = fsync_path(staging.string()); !s.ok()) return s;
  // Saving an iteration again (e.g. after resuming from an earlier one): the old copy goes only
  // once the new one is complete.
  if (fs::exists(final_dir, ec)) {
    const fs::path old = final_dir.string() + ".old";
    fs::remove_all(old, ec);
    fs::rename(final_dir, old, ec);
    if (ec) return fs_error(final_dir.string(), "cannot move the previous copy aside", ec);
    fs::rename(staging, final_dir, ec);
    if (ec) return fs_error(staging.string(), "cannot rename to " + final_dir.string(), ec);
    fs::remove_all(old, ec);
  } else {
    fs::rename(staging, final_dir, ec);
    if (ec) return fs_error(staging.string(), "cannot rename to " + final_dir.string(), ec);
  }
  if (absl::Status s = fsync_path(save_dir); !s.ok()) return s;

  const std::string latest = (fs::path(save_dir) / kLatestFile).string();
  const std::string latest_tmp = latest + ".tmp";
  if (absl::Status s = write_file_synced(latest_tmp, absl::StrCat(iteration, "\n")); !s.ok()) {
    return s;
  }
  fs::rename(latest_tmp, latest, ec);
  if (ec) return fs_error(latest_tmp, "cannot rename to latest", ec);
  return fsync_path(save_dir);
}

absl::Status prune_checkpoints(const std::string& save_dir, int keep_last) {
  if (keep_last <= 0) return absl::OkStatus();
  auto latest = read_latest(save_dir);
  if (!latest.ok()) return latest.status();
  const std::vector<int64_t> iterations = list_checkpoints(save_dir);
  const size_t keep = static_cast<size_t>(keep_last);
  for (size_t i = 0; i + keep < iterations.size(); ++i) {
    if (iterations[i] == *latest) continue;
    const fs::path dir = fs::path(save_dir) / iteration_dir_name(iterations[i]);
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) return fs_error(dir.string(), "cannot remove an old checkpoint", ec);
  }
  return absl::OkStatus();
}

}  // namespace moefold
