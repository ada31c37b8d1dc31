// Inputs fuzz/recipe_fuzzer found (each also kept in fuzz/corpus/recipe/): every error stays one
// line.
#include <gtest/gtest.h>

#include <string>

#include "trainer/config_parse.h"

namespace moefold {
namespace {

TEST(RecipeFuzzRegressions, YamlErrorQuotingAControlCharacterIsOneLine) {
  // regression_unknown_escape: yaml-cpp's message quotes the offending character, a newline.
  const std::string text("model\0\n  hidden_size: 6\n4parrllel:\n  tensor_model_~parslalize: 2\n",
                         65);
  auto recipe = parse_recipe_string(text, "fuzz.yaml", {});
  ASSERT_FALSE(recipe.ok());
  const std::string message(recipe.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.rfind("fuzz.yaml:", 0), 0u) << message;
}

TEST(RecipeFuzzRegressions, MultiLineValuesInErrorsAreEscaped) {
  auto recipe = parse_recipe_string("model:\n  hidden_size: |\n    12\n    34\n", "block.yaml", {});
  ASSERT_FALSE(recipe.ok());
  EXPECT_EQ(recipe.status().message().find('\n'), std::string::npos) << recipe.status();
}

}  // namespace
}  // namespace moefold
