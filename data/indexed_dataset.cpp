#include "data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {
namespace {

bool valid_dtype_code(uint8_t code) { return code >= 1 && code <= 8; }

template <typename T>
T load(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Range of ids a dtype can store; float dtypes hold no token ids.
bool integer_range(IndexedDType dtype, int64_t* lo, int64_t* hi) {
  switch (dtype) {
    case IndexedDType::kUInt8: *lo = 0; *hi = 255; return true;
    case IndexedDType::kInt8: *lo = -128; *hi = 127; return true;
    case IndexedDType::kInt16: *lo = -32768; *hi = 32767; return true;
    case IndexedDType::kUInt16: *lo = 0; *hi = 65535; return true;
    case IndexedDType::kInt32:
    case IndexedDType::kInt64:
      *lo = std::numeric_limits<int32_t>::min();
      *hi = std::numeric_limits<int32_t>::max();
      return true;
    case IndexedDType::kFloat32:
    case IndexedDType::kFloat64: return false;
  }
  return false;
}

int64_t load_id(IndexedDType dtype, const unsigned char* p) {
  switch (dtype) {
    case IndexedDType::kUInt8: return load<uint8_t>(p);
    case IndexedDType::kInt8: return load<int8_t>(p);
    case IndexedDType::kInt16: return load<int16_t>(p);
    case IndexedDType::kUInt16: return load<uint16_t>(p);
    case IndexedDType::kInt32: return load<int32_t>(p);
    case IndexedDType::kInt64: return load<int64_t>(p);
    default: MOEFOLD_CHECK(false, "float dtype has no integer ids");
  }
  return 0;
}

void store_id(IndexedDType dtype, int32_t id, char* p) {
  switch (dtype) {
    case IndexedDType::kUInt8: { uint8_t v = id; std::memcpy(p, &v, 1); return; }
    case IndexedDType::kInt8: { int8_t v = id; std::memcpy(p, &v, 1); return; }
    case IndexedDType::kInt16: { int16_t v = id; std::memcpy(p, &v, 2); return; }
    case IndexedDType::kUInt16: { uint16_t v = id; std::memcpy(p, &v, 2); return; }
    case IndexedDType::kInt32: { std::memcpy(p, &id, 4); return; }
    case IndexedDType::kInt64: { int64_t v = id; std::memcpy(p, &v, 8); return; }
    default: MOEFOLD_CHECK(false, "float dtype has no integer ids");
  }
}

absl::Status write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes > 0 && std::fwrite(data, 1, bytes, f) != bytes) {
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t dtype_size(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::kUInt8:
    case IndexedDType::kInt8: return 1;
    case IndexedDType::kInt16:
    case IndexedDType::kUInt16: return 2;
    case IndexedDType::kInt32:
    case IndexedDType::kFloat32: return 4;
    case IndexedDType::kInt64:
    case IndexedDType::kFloat64: return 8;
  }
  MOEFOLD_CHECK(false, "unknown dtype code " << static_cast<int>(dtype));
  return 0;
}

const char* dtype_name(IndexedDType dtype) {
  switch (dtype) {
    case IndexedDType::kUInt8: return "uint8";
    case IndexedDType::kInt8: return "int8";
    case IndexedDType::kInt16: return "int16";
    case IndexedDType::kInt32: return "int32";
    case IndexedDType::kInt64: return "int64";
    case IndexedDType::kFloat64: return "float64";
    case IndexedDType::kFloat32: return "float32";
    case IndexedDType::kUInt16: return "uint16";
  }
  return "unknown";
}

IndexedDType best_fitting_dtype(int64_t vocab_size) {
  return vocab_size < 65500 ? IndexedDType::kUInt16 : IndexedDType::kInt32;
}

std::string index_file_path(const std::string& prefix) { return prefix + ".idx"; }
std::string data_file_path(const std::string& prefix) { return prefix + ".bin"; }

// ---- writer ----

IndexedDatasetBuilder::IndexedDatasetBuilder(std::string prefix, IndexedDType dtype,
                                             std::FILE* bin)
    : prefix_(std::move(prefix)), dtype_(dtype), bin_(bin) {}

absl::StatusOr<IndexedDatasetBuilder> IndexedDatasetBuilder::create(const std::string& prefix,
                                                                    IndexedDType dtype) {
  if (!valid_dtype_code(static_cast<uint8_t>(dtype))) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": unknown dtype code ", static_cast<int>(dtype)));
  }
  int64_t lo, hi;
  if (!integer_range(dtype, &lo, &hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": dtype ", dtype_name(dtype), " cannot hold token ids"));
  }
  const std::string path = data_file_path(prefix);
  std::FILE* bin = std::fopen(path.c_str(), "wb");
  if (bin == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  return IndexedDatasetBuilder(prefix, dtype, bin);
}

absl::Status IndexedDatasetBuilder::add_item(std::span<const int32_t> tokens) {
  MOEFOLD_CHECK(bin_ != nullptr, "add_item after finalize");
  int64_t lo, hi;
  MOEFOLD_CHECK(integer_range(dtype_, &lo, &hi), "create() admits integer dtypes only");
  const int64_t item = dtype_size(dtype_);
  buffer_.resize(tokens.size() * item);
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < lo || tokens[i] > hi) {
      return absl::InvalidArgumentError(absl::StrCat(data_file_path(prefix_), ": token id ",
                                                     tokens[i], " does not fit dtype ",
                                                     dtype_name(dtype_)));
    }
    store_id(dtype_, tokens[i], buffer_.data() + i * item);
  }
  if (absl::Status s = write_all(bin_.get(), buffer_.data(), buffer_.size(),
                                 data_file_path(prefix_));
      !s.ok()) {
    return s;
  }
  sequence_lengths_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

void IndexedDatasetBuilder::end_document() {
  document_indices_.push_back(static_cast<int64_t>(sequence_lengths_.size()));
}

absl::Status IndexedDatasetBuilder::finalize() {
  MOEFOLD_CHECK(bin_ != nullptr, "finalize called twice");
  const std::string bin_path = data_file_path(prefix_);
  if (std::fclose(bin_.release()) != 0) {
    return absl::InternalError(absl::StrCat(bin_path, ": close failed: ", std::strerror(errno)));
  }
  const std::string idx_path = index_file_path(prefix_);
  std::unique_ptr<std::FILE, FileCloser> idx(std::fopen(idx_path.c_str(), "wb"));
  if (idx == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(idx_path, ": cannot open for writing: ", std::strerror(errno)));
  }
  std::vector<int64_t> pointers_S(sequence_lengths_.size());
  int64_t offset = 0;
  for (size_t i = 0; i < sequence_lengths_.size(); ++i) {
    pointers_S[i] = offset;
    offset += static_cast<int64_t>(sequence_lengths_[i]) * dtype_size(dtype_);
  }
  const uint8_t code = static_cast<uint8_t>(dtype_);
  const uint64_t sequence_count = sequence_lengths_.size();
  const uint64_t document_count = document_indices_.size();
  std::FILE* f = idx.get();
  for (absl::Status s : {write_all(f, kIndexMagic, sizeof(kIndexMagic), idx_path),
                         write_all(f, &kIndexVersion, 8, idx_path),
                         write_all(f, &code, 1, idx_path),
                         write_all(f, &sequence_count, 8, idx_path),
                         write_all(f, &document_count, 8, idx_path),
                         write_all(f, sequence_lengths_.data(), 4 * sequence_count, idx_path),
                         write_all(f, pointers_S.data(), 8 * sequence_count, idx_path),
                         write_all(f, document_indices_.data(), 8 * document_count, idx_path)}) {
    if (!s.ok()) return s;
  }
  if (std::fclose(idx.release()) != 0) {
    return absl::InternalError(absl::StrCat(idx_path, ": close failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// ---- memory mapping ----

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  }
  const int64_t size = st.st_size;
  const unsigned char* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    data = static_cast<const unsigned char*>(p);
  }
  ::close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
}

// ---- reader ----

absl::StatusOr<std::shared_ptr<const IndexedDataset>> IndexedDataset::open(
    const std::string& prefix) {
  const std::string idx_path = index_file_path(prefix);
  const std::string bin_path = data_file_path(prefix);
  auto idx_or = MappedFile::open(idx_path);
  if (!idx_or.ok()) return idx_or.status();
  const MappedFile& idx = **idx_or;
  auto corrupt = [&](const auto&... what) {
    return absl::DataLossError(absl::StrCat(idx_path, ": ", what...));
  };

  if (idx.size() < kIndexHeaderBytes) {
    return corrupt("truncated header: ", idx.size(), " bytes, a MMIDIDX header has ",
                   kIndexHeaderBytes);
  }
  const unsigned char* p = idx.data();
  if (std::memcmp(p, kIndexMagic, sizeof(kIndexMagic)) != 0) {
    return corrupt("bad magic: not a Megatron MMIDIDX index file");
  }
  const uint64_t version = load<uint64_t>(p + 9);
  if (version != kIndexVersion) {
    return corrupt("unsupported version ", version, " (expected ", kIndexVersion, ")");
  }
  const uint8_t code = load<uint8_t>(p + 17);
  if (!valid_dtype_code(code)) {
    return corrupt("bad dtype code ", static_cast<int>(code), " (Megatron's codes are 1..8)");
  }
  const uint64_t sequence_count = load<uint64_t>(p + 18);
  const uint64_t document_count = load<uint64_t>(p + 26);
  const uint64_t body = static_cast<uint64_t>(idx.size() - kIndexHeaderBytes);
  // Each sequence takes 12 bytes and each document index 8: reject absurd counts before
  // multiplying, so the size arithmetic below cannot overflow.
  if (sequence_count > body / 12 || document_count > body / 8) {
    return corrupt("sizes inconsistent with the file length: header says ", sequence_count,
                   " sequences and ", document_count, " document indices but the file has ",
                   idx.size(), " bytes");
  }
  const uint64_t expected = kIndexHeaderBytes + 12 * sequence_count + 8 * document_count;
  if (static_cast<uint64_t>(idx.size()) == expected + sequence_count && sequence_count > 0) {
    return corrupt("not supported yet: multimodal index (per-sequence modes)");
  }
  if (static_cast<uint64_t>(idx.size()) != expected) {
    return corrupt("sizes inconsistent with the file length: header says ", sequence_count,
                   " sequences and ", document_count, " document indices (", expected,
                   " bytes) but the file has ", idx.size(), " bytes");
  }
  if (document_count == 0) return corrupt("no document indices (expected at least the leading 0)");

  std::shared_ptr<IndexedDataset> ds(new IndexedDataset());
  ds->prefix_ = prefix;
  ds->dtype_ = static_cast<IndexedDType>(code);
  ds->sequence_lengths_.resize(sequence_count);
  ds->sequence_pointers_.resize(sequence_count);
  ds->document_indices_.resize(document_count);
  const unsigned char* arrays = p + kIndexHeaderBytes;
  std::memcpy(ds->sequence_lengths_.data(), arrays, 4 * sequence_count);
  std::memcpy(ds->sequence_pointers_.data(), arrays + 4 * sequence_count, 8 * sequence_count);
  std::memcpy(ds->document_indices_.data(), arrays + 12 * sequence_count, 8 * document_count);

  const auto& docs = ds->document_indices_;
  if (docs[0] != 0) return corrupt("document indices must start at 0, found ", docs[0]);
  for (size_t i = 1; i < docs.size(); ++i) {
    if (docs[i] < docs[i - 1] || docs[i] > static_cast<int64_t>(sequence_count)) {
      return corrupt("document index ", i, " = ", docs[i], " out of range (previous ",
                     docs[i - 1], ", ", sequence_count, " sequences)");
    }
  }

  auto bin_or = MappedFile::open(bin_path);
  if (!bin_or.ok()) return bin_or.status();
  ds->bin_ = std::move(*bin_or);
  const int64_t item = dtype_size(ds->dtype_);
  const int64_t bin_size = ds->bin_->size();
  for (uint64_t i = 0; i < sequence_count; ++i) {
    const int64_t length = ds->sequence_lengths_[i];
    const int64_t pointer = ds->sequence_pointers_[i];
    if (length < 0) return corrupt("sequence ", i, " has negative length ", length);
    if (pointer < 0 || pointer > bin_size || length > (bin_size - pointer) / item) {
      return absl::DataLossError(absl::StrCat(
          bin_path, ": sequence ", i, " (pointer ", pointer, ", ", length, " tokens of ",
          item, " bytes) lies outside the file of ", bin_size, " bytes (truncated .bin?)"));
    }
    ds->num_tokens_ += length;
  }
  return std::shared_ptr<const IndexedDataset>(std::move(ds));
}

absl::Status IndexedDataset::read(int64_t sequence, int64_t offset, int64_t length,
                                  int64_t vocab_size, std::vector<int32_t>* out_L) const {
  MOEFOLD_CHECK(sequence >= 0 && sequence < num_sequences(), "sequence " << sequence);
  MOEFOLD_CHECK(offset >= 0 && length >= 0 && offset + length <= sequence_lengths_[sequence],
                "offset " << offset << " length " << length << " of sequence " << sequence);
  int64_t lo, hi;
  if (!integer_range(dtype_, &lo, &hi)) {
    return absl::InvalidArgumentError(absl::StrCat(
        data_file_path(prefix_), ": dtype ", dtype_name(dtype_), " holds no token ids"));
  }
  const int64_t item = dtype_size(dtype_);
  const unsigned char* p = bin_->data() + sequence_pointers_[sequence] + offset * item;
  out_L->reserve(out_L->size() + length);
  for (int64_t i = 0; i < length; ++i) {
    const int64_t id = load_id(dtype_, p + i * item);
    if (id < 0 || id > hi) {
      return absl::OutOfRangeError(absl::StrCat("token id ", id, " in ", data_file_path(prefix_),
                                                " (sequence ", sequence, ") is not a valid id"));
    }
    if (vocab_size > 0 && id >= vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("token id ", id, " in ", data_file_path(prefix_),
                                                " (sequence ", sequence, ") ≥ vocab size ",
                                                vocab_size));
    }
    out_L->push_back(static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

absl::Status IndexedDataset::check_token_ids(int64_t vocab_size) const {
  int64_t lo, hi;
  if (!integer_range(dtype_, &lo, &hi)) {
    return absl::InvalidArgumentError(absl::StrCat(
        data_file_path(prefix_), ": dtype ", dtype_name(dtype_), " holds no token ids"));
  }
  const int64_t item = dtype_size(dtype_);
  for (int64_t sequence = 0; sequence < num_sequences(); ++sequence) {
    const unsigned char* p = bin_->data() + sequence_pointers_[sequence];
    for (int64_t i = 0, n = sequence_lengths_[sequence]; i < n; ++i) {
      const int64_t id = load_id(dtype_, p + i * item);
      if (id < 0 || id >= vocab_size) {
        return absl::OutOfRangeError(absl::StrCat(
            data_file_path(prefix_), ": token id ", id, " (sequence ", sequence, ", token ", i,
            ") is outside the tokenizer's vocabulary [0, ", vocab_size,
            "): the data was tokenized with another vocabulary"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace moefold
