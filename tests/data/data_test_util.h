// Helpers shared by the data tests: scratch directories and small datasets written on the fly.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/indexed_dataset.h"

namespace moefold::testing_util {

// A fresh, empty directory for one test.
inline std::string scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                                    "moefold_data_tests" /
                                    (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Writes one sequence per document.
inline void write_documents(const std::string& prefix,
                            const std::vector<std::vector<int32_t>>& documents,
                            IndexedDType dtype = IndexedDType::kUInt16) {
  auto builder = IndexedDatasetBuilder::create(prefix, dtype);
  ASSERT_TRUE(builder.ok()) << builder.status();
  for (const auto& doc : documents) {
    ASSERT_TRUE(builder->add_item(doc).ok());
    builder->end_document();
  }
  ASSERT_TRUE(builder->finalize().ok());
}

// Documents of the given sizes whose tokens are first_token, first_token + 1, ... in order, so
// every token says where it came from.
inline std::vector<std::vector<int32_t>> counting_documents(const std::vector<int>& sizes,
                                                            int32_t first_token = 0) {
  std::vector<std::vector<int32_t>> docs;
  int32_t next = first_token;
  for (int size : sizes) {
    std::vector<int32_t> doc;
    for (int i = 0; i < size; ++i) doc.push_back(next++);
    docs.push_back(doc);
  }
  return docs;
}

inline std::string source_path(const std::string& relative) {
  return std::string(MOEFOLD_SOURCE_DIR) + "/" + relative;
}

}  // namespace moefold::testing_util
