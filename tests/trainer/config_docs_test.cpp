// docs/recipe.md is exactly the reference generated from the schema table, and the table is whole.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "trainer/config_schema.h"

namespace moefold {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(ConfigDocs, RecipeReferenceIsUpToDate) {
  const std::string path = std::string(MOEFOLD_SOURCE_DIR) + "/docs/recipe.md";
  const std::string generated = recipe_reference_markdown();
  if (std::getenv("MOEFOLD_WRITE_RECIPE_DOCS") != nullptr) {
    std::ofstream(path) << generated;
  }
  EXPECT_TRUE(read_file(path) == generated)
      << "docs/recipe.md is stale; regenerate it with MOEFOLD_WRITE_RECIPE_DOCS=1 "
         "build/tests/trainer/trainer_tests --gtest_filter='ConfigDocs.*'";
}

TEST(ConfigDocs, EveryKeyIsDocumentedOnce) {
  const std::string generated = recipe_reference_markdown();
  for (const RecipeKey& key : recipe_schema()) {
    SCOPED_TRACE(key.path);
    EXPECT_FALSE(key.meaning.empty());
    EXPECT_NE(generated.find("| `" + std::string(key.name()) + "` |"), std::string::npos);
    EXPECT_EQ(find_recipe_key(key.path), &key);
  }
}

}  // namespace
}  // namespace moefold
