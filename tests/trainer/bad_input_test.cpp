// Smaller bad inputs of issue 20: each is one clear line, or accepted when it is valid.
#include <gtest/gtest.h>

#include "tiny_run.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {
namespace {

TEST(BadInput, EvalOnAnEmptyValidationSplitIsAnError) {
  const std::string dir = fresh_temp_dir("empty-valid");
  const Recipe recipe = tiny_recipe(write_tiny_dataset(dir, 200, 3), dir + "/run",
                                    {"data.split=100,0,0"});
  auto trainer = Trainer::create(recipe, ParallelContext::single_process());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto eval = (*trainer)->evaluate(2);
  ASSERT_FALSE(eval.ok());
  EXPECT_NE(eval.status().message().find("nothing to evaluate: the validation split has 0 samples"),
            std::string::npos)
      << eval.status();
}

TEST(BadInput, TokenizerTypeNullIsAccepted) {
  // The null tokenizer takes its vocabulary from model.vocab_size.
  const std::string data = "model:\n  vocab_size: 1000\ndata:\n  data_path: some/prefix\n  tokenizer_type: ";
  for (const std::string& yaml : {data + "null\n", data + "\"null\"\n"}) {
    auto recipe = parse_recipe_string(yaml, "null.yaml", {});
    ASSERT_TRUE(recipe.ok()) << recipe.status();
    EXPECT_EQ(recipe->data.tokenizer_type, "null");
  }
  auto set = parse_recipe_string("model:\n  vocab_size: 1000\ndata:\n  data_path: some/prefix\n",
                                 "set.yaml", {"data.tokenizer_type=null"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->data.tokenizer_type, "null");
}

}  // namespace
}  // namespace moefold::testing
