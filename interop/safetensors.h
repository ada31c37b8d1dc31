// The safetensors format (Hugging Face): an 8-byte little-endian header length n, n bytes of
// JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__":
// {..}}, then the raw little-endian tensor bytes, offsets counted from the end of the header.
//
// SafetensorsWriter streams one file tensor by tensor (the header is known up front, so no tensor
// is ever held whole). SafetensorsFile maps a file read-only and validates its header against the
// file's size before anything is read, so a truncated file or a header that lies about offsets
// is one error line naming the file and tensor, never a read past the end.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moefold {

enum class SafetensorsDType { kF32, kBF16, kF16 };

const char* safetensors_dtype_name(SafetensorsDType dtype);  // "F32", "BF16", "F16"
int64_t safetensors_dtype_bytes(SafetensorsDType dtype);

struct SafetensorsEntry {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte offsets in the data section (filled by the writer)

  int64_t numel() const;
};

// Writes `path` with exactly `entries` (F32), in that order. append() takes each tensor's
// elements in row-major order, in any number of pieces; finish() checks that every byte came,
// flushes and fsyncs.
class SafetensorsWriter {
 public:
  static absl::StatusOr<SafetensorsWriter> create(const std::string& path,
                                                  std::vector<SafetensorsEntry> entries);
  SafetensorsWriter(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&&) = delete;
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();

  absl::Status append(std::span<const float> values);
  absl::Status finish();

 private:
  SafetensorsWriter(std::string path, std::FILE* file, int64_t data_bytes)
      : path_(std::move(path)), file_(file), data_bytes_(data_bytes) {}
  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t data_bytes_ = 0;
  int64_t written_ = 0;
};

// A read-only memory map of one safetensors file with its validated header.
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> open(const std::string& path);
  SafetensorsFile(SafetensorsFile&& other) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& entries() const { return entries_; }
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent

  // Copies the box [offset, offset + shape) of tensor `name` into `out` (row-major `shape`) as
  // float32, converting from BF16/F16. Only the pages of the box are touched.
  absl::Status read_box(const std::string& name, std::span<const int64_t> offset,
                        std::span<const int64_t> shape, float* out) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const unsigned char* map_ = nullptr;
  int64_t map_bytes_ = 0;
  int64_t data_start_ = 0;  // 8 + header length
  std::map<std::string, SafetensorsEntry> entries_;
};

}  // namespace moefold
