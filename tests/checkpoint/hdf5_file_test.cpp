// Hdf5File on one process (serial HDF5): boxes of a global dataset written piecewise and read
// back in other boxes, attributes of every kind, and the errors for what is missing or wrong.
#include "checkpoint/hdf5_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace moefold {
namespace {
namespace fs = std::filesystem;

std::string temp_file(const std::string& name) {
  return (fs::path(::testing::TempDir()) /
          ("moefold_h5_" + std::to_string(::getpid()) + "_" + name + ".h5"))
      .string();
}

TEST(Hdf5File, BoxesWrittenPiecewiseReadBackInOtherBoxes) {
  const std::string path = temp_file("boxes");
  {
    auto file = Hdf5File::create(path, MPI_COMM_NULL);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE(file->create_dataset("group/sub/x", {4, 6}).ok());
    // Columns [0, 3) and [3, 6) of a 4x6 tensor whose element (r, c) is 10r + c.
    for (int64_t c0 : {0, 3}) {
      std::vector<float> box;
      for (int r = 0; r < 4; ++r) {
        for (int64_t c = c0; c < c0 + 3; ++c) box.push_back(static_cast<float>(10 * r + c));
      }
      HyperslabF32 slice{{0, c0}, {4, 3}, box.data()};
      ASSERT_TRUE(file->write("group/sub/x", &slice).ok());
    }
    ASSERT_TRUE(file->write("group/sub/x", nullptr).ok());  // a rank with nothing to write
    ASSERT_TRUE(file->close().ok());
  }
  auto file = Hdf5File::open(path, MPI_COMM_NULL);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file->dataset_shape("group/sub/x"), (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(*file->list_datasets(), std::vector<std::string>{"group/sub/x"});
  std::vector<float> rows(12);
  HyperslabF32 slice{{2, 0}, {2, 6}, rows.data()};  // rows 2..3
  ASSERT_TRUE(file->read("group/sub/x", &slice).ok());
  EXPECT_EQ(rows, (std::vector<float>{20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35}));

  HyperslabF32 outside{{3, 0}, {2, 6}, rows.data()};
  auto status = file->read("group/sub/x", &outside);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("lies outside tensor 'group/sub/x'"), std::string::npos)
      << status;
  EXPECT_TRUE(absl::IsNotFound(file->dataset_shape("group/missing").status()));
  EXPECT_TRUE(absl::IsNotFound(file->dataset_shape("nothing/at/all").status()));
  auto group = file->dataset_shape("group/sub");
  EXPECT_NE(group.status().message().find("'group/sub' is not a tensor"), std::string::npos);
  fs::remove(path);
}

TEST(Hdf5File, AttributesRoundTrip) {
  const std::string path = temp_file("attributes");
  const std::vector<std::pair<std::string, Hdf5Attribute>> attributes = {
      {"int", int64_t{-42}},
      {"float", 1e-5},
      {"text", std::string("softmax")},
      {"empty_text", std::string()},
      {"list", std::vector<int64_t>{0, 1, 1}},
      {"one", std::vector<int64_t>{7}},
      {"none", std::vector<int64_t>{}},
  };
  {
    auto file = Hdf5File::create(path, MPI_COMM_NULL);
    ASSERT_TRUE(file.ok());
    for (const auto& [name, value] : attributes) {
      ASSERT_TRUE(file->write_attribute(name, value).ok()) << name;
    }
    ASSERT_TRUE(file->close().ok());
  }
  auto file = Hdf5File::open(path, MPI_COMM_NULL);
  ASSERT_TRUE(file.ok());
  for (const auto& [name, value] : attributes) {
    auto read = file->read_attribute(name);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(*read, value) << name << ": " << format_attribute(*read);
  }
  EXPECT_EQ(file->list_attributes()->size(), attributes.size());
  EXPECT_TRUE(absl::IsNotFound(file->read_attribute("absent").status()));
  EXPECT_EQ(format_attribute(std::vector<int64_t>{0, 1}), "[0, 1]");
  fs::remove(path);
}

TEST(Hdf5File, OpenErrorsNameTheFile) {
  const std::string missing = temp_file("missing");
  auto absent = Hdf5File::open(missing, MPI_COMM_NULL);
  EXPECT_TRUE(absl::IsNotFound(absent.status()));
  EXPECT_NE(absent.status().message().find(missing), std::string::npos);

  const std::string junk = temp_file("junk");
  std::ofstream(junk) << "not hdf5 at all";
  auto bad = Hdf5File::open(junk, MPI_COMM_NULL);
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(junk + ": not a readable HDF5 file"), std::string::npos)
      << bad.status();
  fs::remove(junk);
}

}  // namespace
}  // namespace moefold
