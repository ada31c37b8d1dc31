#include "data/indexed_dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/data/data_test_util.h"

namespace moefold {
namespace {

using ::testing::HasSubstr;
using testing_util::scratch_dir;
using testing_util::write_documents;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

template <typename T>
void append_le(std::string* out, T value) {
  char buf[sizeof(T)];
  std::memcpy(buf, &value, sizeof(T));  // x86-64 and aarch64 Linux are little-endian
  out->append(buf, sizeof(T));
}

TEST(IndexedDataset, RoundTripKeepsSequencesAndDocuments) {
  for (IndexedDType dtype : {IndexedDType::kUInt16, IndexedDType::kInt32, IndexedDType::kInt64,
                             IndexedDType::kUInt8}) {
    const std::string prefix = scratch_dir() + "/ds";
    auto builder = IndexedDatasetBuilder::create(prefix, dtype);
    ASSERT_TRUE(builder.ok()) << builder.status();
    // Document 0 has two sequences, document 1 one, document 2 an empty one.
    ASSERT_TRUE(builder->add_item(std::vector<int32_t>{1, 2, 3}).ok());
    ASSERT_TRUE(builder->add_item(std::vector<int32_t>{250}).ok());
    builder->end_document();
    ASSERT_TRUE(builder->add_item(std::vector<int32_t>{7, 8}).ok());
    builder->end_document();
    ASSERT_TRUE(builder->add_item(std::vector<int32_t>{}).ok());
    builder->end_document();
    ASSERT_TRUE(builder->finalize().ok());

    auto ds = IndexedDataset::open(prefix);
    ASSERT_TRUE(ds.ok()) << ds.status();
    const int64_t item = dtype_size(dtype);
    EXPECT_EQ((*ds)->dtype(), dtype);
    EXPECT_EQ((*ds)->num_sequences(), 4);
    EXPECT_EQ((*ds)->num_documents(), 3);
    EXPECT_EQ((*ds)->num_tokens(), 6);
    EXPECT_EQ((*ds)->sequence_lengths(), (std::vector<int32_t>{3, 1, 2, 0}));
    EXPECT_EQ((*ds)->sequence_pointers(), (std::vector<int64_t>{0, 3 * item, 4 * item, 6 * item}));
    EXPECT_EQ((*ds)->document_indices(), (std::vector<int64_t>{0, 2, 3, 4}));
    std::vector<int32_t> tokens;
    ASSERT_TRUE((*ds)->read(0, 1, 2, 0, &tokens).ok());
    ASSERT_TRUE((*ds)->read(1, 0, 1, 0, &tokens).ok());
    ASSERT_TRUE((*ds)->read(2, 0, 2, 0, &tokens).ok());
    EXPECT_EQ(tokens, (std::vector<int32_t>{2, 3, 250, 7, 8}));
  }
}

// The exact bytes Megatron's _IndexWriter writes for documents [[1, 2, 3]] and [[4], [5, 6]]
// (the second document has two sequences) in uint16.
TEST(IndexedDataset, WritesMegatronBytes) {
  const std::string prefix = scratch_dir() + "/ds";
  auto builder = IndexedDatasetBuilder::create(prefix, IndexedDType::kUInt16);
  ASSERT_TRUE(builder.ok());
  ASSERT_TRUE(builder->add_item(std::vector<int32_t>{1, 2, 3}).ok());
  builder->end_document();
  ASSERT_TRUE(builder->add_item(std::vector<int32_t>{4}).ok());
  ASSERT_TRUE(builder->add_item(std::vector<int32_t>{5, 6}).ok());
  builder->end_document();
  ASSERT_TRUE(builder->finalize().ok());

  std::string idx("MMIDIDX\0\0", 9);
  append_le<uint64_t>(&idx, 1);  // version
  append_le<uint8_t>(&idx, 8);   // uint16
  append_le<uint64_t>(&idx, 3);  // sequences
  append_le<uint64_t>(&idx, 3);  // document indices: 0, 1, 3
  for (int32_t length : {3, 1, 2}) append_le(&idx, length);
  for (int64_t pointer : {0, 6, 8}) append_le(&idx, pointer);
  for (int64_t doc : {0, 1, 3}) append_le(&idx, doc);
  EXPECT_EQ(read_bytes(prefix + ".idx"), idx);
  EXPECT_EQ(idx.size(), 34u + 3 * 4 + 3 * 8 + 3 * 8);

  std::string bin;
  for (uint16_t t : {1, 2, 3, 4, 5, 6}) append_le(&bin, t);
  EXPECT_EQ(read_bytes(prefix + ".bin"), bin);

  // And hand-made Megatron bytes read back (int32 this time).
  const std::string other = scratch_dir() + "/megatron";
  std::string idx32("MMIDIDX\0\0", 9);
  append_le<uint64_t>(&idx32, 1);
  append_le<uint8_t>(&idx32, 4);  // int32
  append_le<uint64_t>(&idx32, 2);
  append_le<uint64_t>(&idx32, 2);
  for (int32_t length : {2, 1}) append_le(&idx32, length);
  for (int64_t pointer : {0, 8}) append_le(&idx32, pointer);
  for (int64_t doc : {0, 2}) append_le(&idx32, doc);
  write_bytes(other + ".idx", idx32);
  std::string bin32;
  for (int32_t t : {50256, 70000, 9}) append_le(&bin32, t);
  write_bytes(other + ".bin", bin32);
  auto ds = IndexedDataset::open(other);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->num_documents(), 1);
  std::vector<int32_t> tokens;
  ASSERT_TRUE((*ds)->read(0, 0, 2, 0, &tokens).ok());
  ASSERT_TRUE((*ds)->read(1, 0, 1, 0, &tokens).ok());
  EXPECT_EQ(tokens, (std::vector<int32_t>{50256, 70000, 9}));
}

TEST(IndexedDataset, BestFittingDtypeFollowsMegatron) {
  EXPECT_EQ(best_fitting_dtype(257), IndexedDType::kUInt16);
  EXPECT_EQ(best_fitting_dtype(50257), IndexedDType::kUInt16);
  EXPECT_EQ(best_fitting_dtype(65500), IndexedDType::kInt32);
  EXPECT_EQ(best_fitting_dtype(152064), IndexedDType::kInt32);
}

TEST(IndexedDataset, BuilderRejectsIdsThatDoNotFit) {
  auto builder = IndexedDatasetBuilder::create(scratch_dir() + "/ds", IndexedDType::kUInt16);
  ASSERT_TRUE(builder.ok());
  const absl::Status s = builder->add_item(std::vector<int32_t>{1, 70000});
  EXPECT_THAT(std::string(s.message()), HasSubstr("token id 70000 does not fit dtype uint16"));
}

// A valid dataset to damage: 3 sequences, uint16.
class CorruptIndexedDataset : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = scratch_dir() + "/ds";
    write_documents(prefix_, {{1, 2, 3}, {4, 5}, {6}});
    idx_ = read_bytes(prefix_ + ".idx");
    bin_ = read_bytes(prefix_ + ".bin");
  }
  // Opens after replacing the .idx (and optionally the .bin) and returns the error message.
  std::string open_error(const std::string& idx, const std::string* bin = nullptr) {
    write_bytes(prefix_ + ".idx", idx);
    if (bin != nullptr) write_bytes(prefix_ + ".bin", *bin);
    auto ds = IndexedDataset::open(prefix_);
    EXPECT_FALSE(ds.ok());
    return ds.ok() ? "" : std::string(ds.status().message());
  }
  template <typename T>
  std::string patched(size_t offset, T value) {
    std::string out = idx_;
    std::memcpy(out.data() + offset, &value, sizeof(T));
    return out;
  }
  std::string prefix_, idx_, bin_;
};

TEST_F(CorruptIndexedDataset, OriginalOpens) {
  EXPECT_TRUE(IndexedDataset::open(prefix_).ok());
}

TEST_F(CorruptIndexedDataset, BadMagic) {
  std::string idx = idx_;
  idx[0] = 'X';
  const std::string m = open_error(idx);
  EXPECT_THAT(m, HasSubstr(prefix_ + ".idx"));
  EXPECT_THAT(m, HasSubstr("bad magic"));
}

TEST_F(CorruptIndexedDataset, BadVersion) {
  const std::string m = open_error(patched<uint64_t>(9, 2));
  EXPECT_THAT(m, HasSubstr(prefix_ + ".idx: unsupported version 2"));
}

TEST_F(CorruptIndexedDataset, BadDtypeCode) {
  EXPECT_THAT(open_error(patched<uint8_t>(17, 9)), HasSubstr("bad dtype code 9"));
  EXPECT_THAT(open_error(patched<uint8_t>(17, 0)), HasSubstr("bad dtype code 0"));
}

TEST_F(CorruptIndexedDataset, TruncatedHeader) {
  EXPECT_THAT(open_error(idx_.substr(0, 20)), HasSubstr("truncated header: 20 bytes"));
}

TEST_F(CorruptIndexedDataset, SizesInconsistentWithIdxLength) {
  const std::string truncated = open_error(idx_.substr(0, idx_.size() - 1));
  EXPECT_THAT(truncated, HasSubstr(prefix_ + ".idx: sizes inconsistent with the file length"));
  EXPECT_THAT(open_error(patched<uint64_t>(18, 4)), HasSubstr("sizes inconsistent"));
  EXPECT_THAT(open_error(patched<uint64_t>(18, uint64_t{1} << 62)), HasSubstr("sizes inconsistent"));
  EXPECT_THAT(open_error(idx_ + "garbage"), HasSubstr("sizes inconsistent"));
  // Megatron's multimodal index appends one mode byte per sequence.
  EXPECT_THAT(open_error(idx_ + std::string(3, '\0')),
              HasSubstr("not supported yet: multimodal index"));
}

TEST_F(CorruptIndexedDataset, TruncatedBin) {
  const std::string bin = bin_.substr(0, bin_.size() - 2);
  const std::string m = open_error(idx_, &bin);
  EXPECT_THAT(m, HasSubstr(prefix_ + ".bin: sequence 2"));
  EXPECT_THAT(m, HasSubstr("outside the file of 10 bytes"));
}

TEST_F(CorruptIndexedDataset, PointerOutOfRange) {
  // Sequence pointers start after the 3 lengths.
  const size_t pointers = kIndexHeaderBytes + 3 * 4;
  EXPECT_THAT(open_error(patched<int64_t>(pointers + 8, 1000)),
              HasSubstr("sequence 1 (pointer 1000, 2 tokens of 2 bytes) lies outside"));
  EXPECT_THAT(open_error(patched<int64_t>(pointers, -2)), HasSubstr("sequence 0 (pointer -2"));
}

TEST_F(CorruptIndexedDataset, DocumentIndicesOutOfOrder) {
  const size_t documents = kIndexHeaderBytes + 3 * 12;
  EXPECT_THAT(open_error(patched<int64_t>(documents + 8, 5)),
              HasSubstr("document index 1 = 5 out of range"));
  EXPECT_THAT(open_error(patched<int64_t>(documents, 1)),
              HasSubstr("document indices must start at 0"));
}

TEST_F(CorruptIndexedDataset, MissingFiles) {
  std::filesystem::remove(prefix_ + ".bin");
  auto ds = IndexedDataset::open(prefix_);
  ASSERT_FALSE(ds.ok());
  EXPECT_THAT(std::string(ds.status().message()), HasSubstr(prefix_ + ".bin: cannot open"));
  auto none = IndexedDataset::open(prefix_ + "_missing");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("_missing.idx: cannot open"));
}

TEST_F(CorruptIndexedDataset, TokenBeyondVocabularyNamesTheFile) {
  auto ds = IndexedDataset::open(prefix_);
  ASSERT_TRUE(ds.ok());
  std::vector<int32_t> tokens;
  const absl::Status s = (*ds)->read(1, 0, 2, 5, &tokens);
  EXPECT_EQ(std::string(s.message()),
            "token id 5 in " + prefix_ + ".bin (sequence 1) ≥ vocab size 5");
}

}  // namespace
}  // namespace moefold
