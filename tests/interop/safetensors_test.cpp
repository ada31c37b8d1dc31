// The safetensors writer and reader: files checked by an independent reader written here from the
// format's description (8-byte little-endian length, JSON header, raw data), shards and index,
// boxes read back, BF16/F16 conversion, and one clear error for each kind of damaged file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "interop/safetensors.h"
#include "interop/sharded_safetensors.h"

namespace moefold {
namespace {
namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("moefold-st-" + name + "-" +
                                                    std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// The independent reader: header JSON and each tensor's float32 values by name.
struct IndependentFile {
  nlohmann::json header;
  std::map<std::string, std::vector<float>> values;
};

IndependentFile read_independently(const std::string& path) {
  const std::string bytes = read_all(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(bytes[i]);
  IndependentFile out;
  out.header = nlohmann::json::parse(bytes.substr(8, n));
  for (const auto& [name, v] : out.header.items()) {
    if (name == "__metadata__") continue;
    const size_t begin = v["data_offsets"][0], end = v["data_offsets"][1];
    std::vector<float> values((end - begin) / 4);
    std::memcpy(values.data(), bytes.data() + 8 + n + begin, end - begin);
    out.values[name] = values;
  }
  return out;
}

std::vector<float> iota(size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(Safetensors, WrittenFileReadsBackIndependently) {
  const std::string path = temp_dir("one") + "/t.safetensors";
  auto writer = SafetensorsWriter::create(
      path, {{"a.weight", SafetensorsDType::kF32, {2, 3}}, {"b", SafetensorsDType::kF32, {4}}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<float> a = iota(6, 1), b = iota(4, 10);
  ASSERT_TRUE(writer->append(std::span(a).first(4)).ok());  // pieces need not be tensors
  ASSERT_TRUE(writer->append(std::span(a).subspan(4)).ok());
  ASSERT_TRUE(writer->append(b).ok());
  ASSERT_TRUE(writer->finish().ok());

  const IndependentFile file = read_independently(path);
  EXPECT_EQ(file.header["__metadata__"]["format"], "pt");
  EXPECT_EQ(file.header["a.weight"]["dtype"], "F32");
  EXPECT_EQ(file.header["a.weight"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(file.header["b"]["shape"], nlohmann::json({4}));
  EXPECT_EQ(file.values.at("a.weight"), a);
  EXPECT_EQ(file.values.at("b"), b);
  const std::string bytes = read_all(path);
  EXPECT_EQ(bytes[0] % 8, 0) << "the data section starts 8-byte aligned";

  auto mapped = SafetensorsFile::open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  std::vector<float> box(2);
  const std::vector<int64_t> offset = {1, 1}, shape = {1, 2};
  ASSERT_TRUE(mapped->read_box("a.weight", offset, shape, box.data()).ok());
  EXPECT_EQ(box, (std::vector<float>{5, 6}));
}

TEST(Safetensors, WriterRefusesShortOrLongData) {
  const std::string path = temp_dir("short") + "/t.safetensors";
  auto writer = SafetensorsWriter::create(path, {{"a", SafetensorsDType::kF32, {3}}});
  ASSERT_TRUE(writer.ok());
  const std::vector<float> two = {1, 2};
  ASSERT_TRUE(writer->append(two).ok());
  EXPECT_FALSE(writer->append(two).ok());
  EXPECT_FALSE(writer->finish().ok());
}

// A file whose header is `header` followed by `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, ReadsBf16AndF16AsFloat32) {
  const std::string dir = temp_dir("half");
  std::string file = raw_file(
      R"({"h":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
      R"("f":{"dtype":"F16","shape":[3],"data_offsets":[4,10]}})", 0);
  const uint16_t values[5] = {0x3f80, 0xc040,           // bf16 1.0, -3.0
                              0x3c00, 0xb800, 0x0001};  // f16 1.0, -0.5, smallest subnormal
  file.append(reinterpret_cast<const char*>(values), sizeof(values));
  write_all(dir + "/h.safetensors", file);
  auto mapped = SafetensorsFile::open(dir + "/h.safetensors");
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  float h[2], f[3];
  const std::vector<int64_t> zero = {0};
  ASSERT_TRUE(mapped->read_box("h", zero, std::vector<int64_t>{2}, h).ok());
  ASSERT_TRUE(mapped->read_box("f", zero, std::vector<int64_t>{3}, f).ok());
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -3.0f);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -0.5f);
  EXPECT_EQ(f[2], 0x1p-24f);
}

std::string open_error(const std::string& bytes) {
  const std::string path = temp_dir("bad") + "/bad.safetensors";
  write_all(path, bytes);
  auto mapped = SafetensorsFile::open(path);
  return mapped.ok() ? "" : std::string(mapped.status().message());
}

TEST(Safetensors, DamagedFilesAreOneClearError) {
  const std::string good = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  EXPECT_EQ(open_error(raw_file(good, 16)), "");
  const std::string truncated = raw_file(good, 16).substr(0, 8 + good.size() + 10);

  EXPECT_NE(open_error(truncated).find("tensor 'w': data_offsets end at byte 16 but the file "
                                       "holds only 10 data bytes"),
            std::string::npos)
      << open_error(truncated);
  EXPECT_NE(open_error(raw_file(good, 16).substr(0, 20)).find("header length"), std::string::npos);
  EXPECT_NE(open_error("abc").find("shorter than the 8-byte header length"), std::string::npos);
  const std::string lying_size = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})";
  EXPECT_NE(open_error(raw_file(lying_size, 16)).find("tensor 'w': data_offsets [0, 12] hold 12 "
                                                      "bytes, but F32 [2, 2] needs 16"),
            std::string::npos);
  const std::string overlap = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_NE(open_error(raw_file(overlap, 12)).find("tensors 'a' and 'b' overlap"),
            std::string::npos);
  EXPECT_NE(open_error(raw_file("{not json", 0)).find("not a JSON object"), std::string::npos);
  const std::string int8 = R"({"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})";
  EXPECT_NE(open_error(raw_file(int8, 1)).find("tensor 'w': dtype I8 is not supported"),
            std::string::npos);
}

TEST(Safetensors, BoxOutsideTheTensorIsRefused) {
  const std::string dir = temp_dir("box");
  write_all(dir + "/t.safetensors",
            raw_file(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 16));
  auto mapped = SafetensorsFile::open(dir + "/t.safetensors");
  ASSERT_TRUE(mapped.ok());
  float out[4];
  const absl::Status s = mapped->read_box("w", std::vector<int64_t>{1, 0},
                                          std::vector<int64_t>{2, 2}, out);
  EXPECT_NE(s.message().find("box at [1, 0] of [2, 2] is outside it"), std::string::npos) << s;
  EXPECT_EQ(mapped->read_box("v", std::vector<int64_t>{0}, std::vector<int64_t>{1}, out).code(),
            absl::StatusCode::kNotFound);
}

TEST(ShardedSafetensors, ShardsIndexAndReadBack) {
  const std::string dir = temp_dir("sharded");
  // Tensors of 24, 40 and 8 bytes with 48-byte shards: [a], [b, c].
  auto writer = ShardedSafetensorsWriter::create(
      dir,
      {{"a", SafetensorsDType::kF32, {6}}, {"b", SafetensorsDType::kF32, {2, 5}},
       {"c", SafetensorsDType::kF32, {2}}},
      48);
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ(writer->num_shards(), 2);
  const std::vector<float> all = iota(18, 0);
  ASSERT_TRUE(writer->append(std::span(all).first(7)).ok());
  ASSERT_TRUE(writer->append(std::span(all).subspan(7)).ok());
  ASSERT_TRUE(writer->finish().ok());

  const nlohmann::json index = nlohmann::json::parse(read_all(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 72);
  EXPECT_EQ(index["weight_map"]["a"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["b"], "model-00002-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["c"], "model-00002-of-00002.safetensors");
  const IndependentFile second = read_independently(dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(second.values.at("b"), iota(10, 6));
  EXPECT_EQ(second.values.at("c"), iota(2, 16));

  auto reader = ShardedSafetensorsReader::open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->tensor_names(), (std::vector<std::string>{"a", "b", "c"}));
  auto b = reader->find("b");
  ASSERT_TRUE(b.has_value());
  float row[5];
  ASSERT_TRUE(b->file->read_box("b", std::vector<int64_t>{1, 0}, std::vector<int64_t>{1, 5}, row)
                  .ok());
  EXPECT_EQ(std::vector<float>(row, row + 5), iota(5, 11));

  fs::remove(dir + "/model-00002-of-00002.safetensors");
  auto missing = ShardedSafetensorsReader::open(dir);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(
                "model-00002-of-00002.safetensors: missing shard (the index puts tensor 'b' in it)"),
            std::string::npos)
      << missing.status();
}

TEST(ShardedSafetensors, IndexNamingATensorTheShardLacksIsRefused) {
  const std::string dir = temp_dir("lying-index");
  write_all(dir + "/s.safetensors",
            raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4));
  write_all(dir + "/model.safetensors.index.json",
            R"({"weight_map": {"w": "s.safetensors", "v": "s.safetensors"}})");
  auto reader = ShardedSafetensorsReader::open(dir);
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("the index puts tensor 'v' in this shard, but it is "
                                           "not there"),
            std::string::npos)
      << reader.status();
}

}  // namespace
}  // namespace moefold
