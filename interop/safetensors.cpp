#include "interop/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors is little-endian");

constexpr int64_t kMaxHeaderBytes = 100'000'000;  // the format's own limit

absl::Status file_error(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

absl::StatusOr<SafetensorsDType> parse_dtype(const std::string& name) {
  if (name == "F32") return SafetensorsDType::kF32;
  if (name == "BF16") return SafetensorsDType::kBF16;
  if (name == "F16") return SafetensorsDType::kF16;
  return absl::UnimplementedError(
      absl::StrCat("dtype ", name, " is not supported (F32, BF16 and F16 are)"));
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

float f16_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const int exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in float32
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | static_cast<uint32_t>(exponent + 112) << 23 | (mantissa << 13));
}

void convert(const unsigned char* src, SafetensorsDType dtype, int64_t count, float* out) {
  if (dtype == SafetensorsDType::kF32) {
    std::memcpy(out, src, static_cast<size_t>(count) * 4);
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, 2);
    out[i] = dtype == SafetensorsDType::kBF16 ? bf16_to_float(bits) : f16_to_float(bits);
  }
}

std::string shape_text(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The header's entry for one tensor, checked against the data section's size.
absl::StatusOr<SafetensorsEntry> parse_entry(const std::string& path, const std::string& name,
                                             const nlohmann::json& value, int64_t data_bytes) {
  const auto bad = [&](const std::string& what) {
    return file_error(path, absl::StrCat("tensor '", name, "': ", what));
  };
  if (!value.is_object() || !value.contains("dtype") || !value["dtype"].is_string() ||
      !value.contains("shape") || !value["shape"].is_array() ||
      !value.contains("data_offsets") || !value["data_offsets"].is_array() ||
      value["data_offsets"].size() != 2) {
    return bad("header entry needs dtype, shape and two data_offsets");
  }
  SafetensorsEntry entry;
  entry.name = name;
  auto dtype = parse_dtype(value["dtype"].get<std::string>());
  if (!dtype.ok()) return bad(std::string(dtype.status().message()));
  entry.dtype = *dtype;
  for (const auto& d : value["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) return bad("shape is not a list of sizes");
    entry.shape.push_back(d.get<int64_t>());
  }
  for (const auto& o : value["data_offsets"]) {
    if (!o.is_number_integer() || o.get<int64_t>() < 0) return bad("data_offsets are not offsets");
  }
  entry.begin = value["data_offsets"][0].get<int64_t>();
  entry.end = value["data_offsets"][1].get<int64_t>();
  const int64_t want = entry.numel() * safetensors_dtype_bytes(entry.dtype);
  if (entry.end < entry.begin || entry.end - entry.begin != want) {
    return bad(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end, "] hold ",
                            entry.end - entry.begin, " bytes, but ", value["dtype"].get<std::string>(),
                            " ", shape_text(entry.shape), " needs ", want));
  }
  if (entry.end > data_bytes) {
    return bad(absl::StrCat("data_offsets end at byte ", entry.end, " but the file holds only ",
                            data_bytes, " data bytes (truncated file or a header that lies)"));
  }
  return entry;
}

}  // namespace

const char* safetensors_dtype_name(SafetensorsDType dtype) {
  switch (dtype) {
    case SafetensorsDType::kF32: return "F32";
    case SafetensorsDType::kBF16: return "BF16";
    case SafetensorsDType::kF16: return "F16";
  }
  return "?";
}

int64_t safetensors_dtype_bytes(SafetensorsDType dtype) {
  return dtype == SafetensorsDType::kF32 ? 4 : 2;
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- writing ----

namespace {

// The header JSON for `entries` (offsets filled in), padded with spaces to a multiple of 8 bytes
// so that the data section is aligned.
std::string header_for(std::vector<SafetensorsEntry>& entries, int64_t* data_bytes) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  int64_t at = 0;
  for (SafetensorsEntry& e : entries) {
    e.begin = at;
    e.end = at + e.numel() * safetensors_dtype_bytes(e.dtype);
    at = e.end;
    header[e.name] = {{"dtype", safetensors_dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {e.begin, e.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  *data_bytes = at;
  return text;
}

}  // namespace

absl::StatusOr<SafetensorsWriter> SafetensorsWriter::create(const std::string& path,
                                                            std::vector<SafetensorsEntry> entries) {
  for (const SafetensorsEntry& e : entries) {
    if (e.dtype != SafetensorsDType::kF32) {
      return absl::UnimplementedError(absl::StrCat(path, ": ", e.name, ": only F32 is written"));
    }
  }
  int64_t data_bytes = 0;
  const std::string header = header_for(entries, &data_bytes);
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  }
  const uint64_t length = header.size();
  if (std::fwrite(&length, 8, 1, file) != 1 ||
      std::fwrite(header.data(), 1, header.size(), file) != header.size()) {
    std::fclose(file);
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return SafetensorsWriter(path, file, data_bytes);
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& other) noexcept
    : path_(std::move(other.path_)),
      file_(std::exchange(other.file_, nullptr)),
      data_bytes_(other.data_bytes_),
      written_(other.written_) {}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status SafetensorsWriter::append(std::span<const float> values) {
  const int64_t bytes = static_cast<int64_t>(values.size_bytes());
  if (written_ + bytes > data_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": more tensor data than the header declares"));
  }
  if (std::fwrite(values.data(), 1, values.size_bytes(), file_) != values.size_bytes()) {
    return absl::DataLossError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
  written_ += bytes;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::finish() {
  if (written_ != data_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": ", written_, " of ", data_bytes_,
                                            " data bytes written"));
  }
  const bool ok = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const bool closed = std::fclose(std::exchange(file_, nullptr)) == 0;
  if (!ok || !closed) {
    return absl::DataLossError(absl::StrCat(path_, ": flush failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// ---- reading ----

absl::StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return file_error(path, "cannot stat");
  }
  SafetensorsFile file;
  file.path_ = path;
  file.map_bytes_ = st.st_size;
  if (file.map_bytes_ > 0) {
    void* map = ::mmap(nullptr, static_cast<size_t>(file.map_bytes_), PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return file_error(path, absl::StrCat("mmap failed: ", std::strerror(errno)));
    }
    file.map_ = static_cast<const unsigned char*>(map);
  }
  ::close(fd);  // the mapping stays valid

  if (file.map_bytes_ < 8) return file_error(path, "shorter than the 8-byte header length");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, file.map_, 8);
  if (header_bytes > static_cast<uint64_t>(kMaxHeaderBytes) ||
      static_cast<int64_t>(header_bytes) > file.map_bytes_ - 8) {
    return file_error(path, absl::StrCat("header length ", header_bytes, " exceeds the file's ",
                                         file.map_bytes_, " bytes (truncated or not safetensors)"));
  }
  file.data_start_ = 8 + static_cast<int64_t>(header_bytes);
  const char* text = reinterpret_cast<const char*>(file.map_ + 8);
  const nlohmann::json header =
      nlohmann::json::parse(text, text + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return file_error(path, "the header is not a JSON object");
  }
  const int64_t data_bytes = file.map_bytes_ - file.data_start_;
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;
    auto entry = parse_entry(path, name, value, data_bytes);
    if (!entry.ok()) return entry.status();
    by_offset.push_back(&(file.entries_[name] = std::move(*entry)));
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return file_error(path, absl::StrCat("tensors '", by_offset[i - 1]->name, "' and '",
                                           by_offset[i]->name, "' overlap in the data section"));
    }
  }
  return file;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& other) noexcept { *this = std::move(other); }

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), static_cast<size_t>(map_bytes_));
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    data_start_ = other.data_start_;
    entries_ = std::move(other.entries_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), static_cast<size_t>(map_bytes_));
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  const auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::Status SafetensorsFile::read_box(const std::string& name, std::span<const int64_t> offset,
                                       std::span<const int64_t> shape, float* out) const {
  const SafetensorsEntry* entry = find(name);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const size_t rank = entry->shape.size();
  if (offset.size() != rank || shape.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor '", name, "' has rank ", rank));
  }
  for (size_t a = 0; a < rank; ++a) {
    if (offset[a] < 0 || shape[a] < 0 || offset[a] + shape[a] > entry->shape[a]) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor '", name, "' ", shape_text(entry->shape), ": box at ",
                       shape_text(offset), " of ", shape_text(shape), " is outside it"));
    }
  }
  const int64_t element = safetensors_dtype_bytes(entry->dtype);
  const unsigned char* base = map_ + data_start_ + entry->begin;
  if (rank == 0) {
    convert(base, entry->dtype, 1, out);
    return absl::OkStatus();
  }
  // Row-major strides of the stored tensor; copy one innermost run at a time.
  std::vector<int64_t> stride(rank, 1);
  for (size_t a = rank - 1; a > 0; --a) stride[a - 1] = stride[a] * entry->shape[a];
  int64_t rows = 1;
  for (size_t a = 0; a + 1 < rank; ++a) rows *= shape[a];
  const int64_t run = shape[rank - 1];
  if (run == 0) return absl::OkStatus();
  std::vector<int64_t> index(rank, 0);
  for (int64_t row = 0; row < rows; ++row) {
    int64_t at = offset[rank - 1];
    for (size_t a = 0; a + 1 < rank; ++a) at += (offset[a] + index[a]) * stride[a];
    convert(base + at * element, entry->dtype, run, out + row * run);
    for (size_t a = rank - 1; a-- > 0;) {  // next row index, last axis but one fastest
      if (++index[a] < shape[a]) break;
      index[a] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace moefold
