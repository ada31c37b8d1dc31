#include "checkpoint/verify.h"

#include <filesystem>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checkpoint_meta.h"
#include "checkpoint/hdf5_file.h"
#include "checkpoint/tensor_checksum.h"

namespace moefold {
namespace fs = std::filesystem;
namespace {

// Checks every dataset of `path` against `recorded`; adds the elements verified to `numel`.
absl::Status verify_file(const std::string& path, const FileChecksums& recorded, int64_t* numel) {
  auto file = Hdf5File::open(path, MPI_COMM_NULL);
  if (!file.ok()) return file.status();
  auto names = file->list_datasets();
  if (!names.ok()) return names.status();
  const std::set<std::string> present(names->begin(), names->end());
  for (const auto& [name, value] : recorded) {
    if (present.count(name) == 0) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensor '", name, "' has a checksum in ", kMetaFile, " but is missing"));
    }
  }
  for (const std::string& name : *names) {
    const auto want = recorded.find(name);
    if (want == recorded.end()) {
      return absl::DataLossError(
          absl::StrCat(path, ": tensor '", name, "' has no checksum in ", kMetaFile));
    }
    auto shape = file->dataset_shape(name);
    if (!shape.ok()) return shape.status();
    int64_t count = 1;
    for (int64_t d : *shape) count *= d;
    std::vector<float> values(static_cast<size_t>(count));
    const HyperslabF32 whole{std::vector<int64_t>(shape->size(), 0), *shape, values.data()};
    if (absl::Status s = file->read(name, &whole); !s.ok()) return s;
    const uint64_t got = box_checksum(*shape, whole.offset, *shape, values.data());
    if (got != want->second) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", name,
                                              "' is corrupt: its bytes hash to ",
                                              format_checksum(got), ", ", kMetaFile, " recorded ",
                                              format_checksum(want->second)));
    }
    *numel += count;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> verify_checkpoint(const std::string& path) {
  auto dir = resolve_checkpoint_dir(path);
  if (!dir.ok()) return dir.status();
  auto meta = read_meta((fs::path(*dir) / kMetaFile).string());
  if (!meta.ok()) return meta.status();
  if (meta->checksums.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        *dir, "/", kMetaFile, ": no checksums recorded (saved before moefold kept them)"));
  }
  int64_t numel = 0;
  size_t tensors = 0;
  for (const auto& [file, recorded] : meta->checksums) {
    if (file != kModelFile && file != kOptimFile) {
      return absl::DataLossError(
          absl::StrCat(*dir, "/", kMetaFile, ": checksums for an unknown file '", file, "'"));
    }
    if (absl::Status s = verify_file((fs::path(*dir) / file).string(), recorded, &numel);
        !s.ok()) {
      return s;
    }
    tensors += recorded.size();
  }
  return absl::StrFormat("%s: %d tensors (%.1f M values) match their checksums", *dir, tensors,
                         numel / 1e6);
}

}  // namespace moefold
