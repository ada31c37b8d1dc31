// Megatron-LM's indexed dataset (MMIDIDX version 1): PREFIX.idx holds the metadata, PREFIX.bin the
// tokens. Byte-compatible both ways with megatron/core/datasets/indexed_dataset.py, so data that
// users already preprocessed with Megatron loads as is.
//
// PREFIX.idx, little-endian:
//   magic "MMIDIDX\0\0" (9 bytes) | version u64 = 1 | dtype code u8 |
//   sequence count S u64 | document-index count D u64 |
//   sequence lengths int32[S] (tokens) | sequence pointers int64[S] (byte offsets into .bin) |
//   document indices int64[D] (0, then the end sequence of each document: D = documents + 1)
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moefold {

// Megatron's DType codes.
enum class IndexedDType : uint8_t {
  kUInt8 = 1,
  kInt8 = 2,
  kInt16 = 3,
  kInt32 = 4,
  kInt64 = 5,
  kFloat64 = 6,
  kFloat32 = 7,
  kUInt16 = 8,
};

inline constexpr char kIndexMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
inline constexpr uint64_t kIndexVersion = 1;
inline constexpr int64_t kIndexHeaderBytes = 9 + 8 + 1 + 8 + 8;

int64_t dtype_size(IndexedDType dtype);
const char* dtype_name(IndexedDType dtype);
// As Megatron: uint16 when every id fits comfortably (vocab < 65500), else int32.
IndexedDType best_fitting_dtype(int64_t vocab_size);

std::string index_file_path(const std::string& prefix);  // PREFIX.idx
std::string data_file_path(const std::string& prefix);   // PREFIX.bin

// Writes PREFIX.bin while items are added and PREFIX.idx at finalize().
class IndexedDatasetBuilder {
 public:
  static absl::StatusOr<IndexedDatasetBuilder> create(const std::string& prefix,
                                                      IndexedDType dtype);
  IndexedDatasetBuilder(IndexedDatasetBuilder&&) noexcept = default;
  IndexedDatasetBuilder& operator=(IndexedDatasetBuilder&&) noexcept = default;

  // Appends one sequence. Fails if an id does not fit the dtype.
  absl::Status add_item(std::span<const int32_t> tokens);
  // Closes the current document: the sequences added since the last call form one document.
  void end_document();
  // Flushes PREFIX.bin and writes PREFIX.idx. The builder is spent afterwards.
  absl::Status finalize();

  int64_t num_sequences() const { return static_cast<int64_t>(sequence_lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  IndexedDatasetBuilder(std::string prefix, IndexedDType dtype, std::FILE* bin);

  std::string prefix_;
  IndexedDType dtype_;
  std::unique_ptr<std::FILE, FileCloser> bin_;
  std::vector<int32_t> sequence_lengths_;
  std::vector<int64_t> document_indices_{0};
  std::vector<char> buffer_;
  int64_t num_tokens_ = 0;
};

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  MappedFile(const unsigned char* data, int64_t size) : data_(data), size_(size) {}
  const unsigned char* data_;
  int64_t size_;
};

// Reads PREFIX.idx (copied into memory: its arrays are not aligned) and PREFIX.bin (mapped).
// open() validates everything it can cheaply: a corrupt or truncated file is one clear error.
class IndexedDataset {
 public:
  static absl::StatusOr<std::shared_ptr<const IndexedDataset>> open(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  IndexedDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return static_cast<int64_t>(sequence_lengths_.size()); }
  // Number of documents: the document indices minus their leading 0.
  int64_t num_documents() const { return static_cast<int64_t>(document_indices_.size()) - 1; }
  const std::vector<int32_t>& sequence_lengths() const { return sequence_lengths_; }  // (S)
  const std::vector<int64_t>& sequence_pointers() const { return sequence_pointers_; }  // (S)
  const std::vector<int64_t>& document_indices() const { return document_indices_; }  // (D)
  int64_t num_tokens() const { return num_tokens_; }

  // Appends tokens [offset, offset + length) of `sequence` to out_L as int32 ids. With
  // vocab_size > 0, an id outside [0, vocab_size) is an error naming the .bin file.
  absl::Status read(int64_t sequence, int64_t offset, int64_t length, int64_t vocab_size,
                    std::vector<int32_t>* out_L) const;
  // Scans every token once: an id outside [0, vocab_size) is one error naming the .bin file, the
  // sequence and the id, found when the data is opened rather than when its sample is drawn.
  absl::Status check_token_ids(int64_t vocab_size) const;

 private:
  IndexedDataset() = default;

  std::string prefix_;
  IndexedDType dtype_ = IndexedDType::kUInt16;
  std::vector<int32_t> sequence_lengths_;
  std::vector<int64_t> sequence_pointers_;
  std::vector<int64_t> document_indices_;
  int64_t num_tokens_ = 0;
  std::unique_ptr<MappedFile> bin_;
};

}  // namespace moefold
