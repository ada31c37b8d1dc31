// The recipe schema: one table of every recipe key (path, type, default, range, meaning). It is
// the single source for parsing, type/range checks, "did you mean" suggestions and docs/recipe.md.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "trainer/train_config.h"

namespace moefold {

struct RecipeKey {
  std::string path;     // "section.key", e.g. "moe.moe_router_topk"
  std::string type;     // for docs: "int", "float", "bool", "string", "softmax or sigmoid", ...
  std::string range;    // for docs: "≥ 1", "0 … 1", "" when any value of the type is fine
  std::string meaning;  // one sentence for docs
  // Checks the YAML value's type and range and stores it. The error is the reason only
  // ("expected an integer, got \"abc\""); the caller prefixes file, line and key.
  std::function<absl::Status(const YAML::Node& value, Recipe& recipe)> assign;
  // The key's current value in YAML form (for the default column of the docs).
  std::function<std::string(Recipe& recipe)> show;

  absl::string_view section() const { return absl::string_view(path).substr(0, path.find('.')); }
  absl::string_view name() const { return absl::string_view(path).substr(path.find('.') + 1); }
};

// Every key, grouped by section in recipe_sections() order.
const std::vector<RecipeKey>& recipe_schema();
// "model", "moe", "parallel", "training", "optimizer", "data", "checkpoint", "logging".
const std::vector<std::string>& recipe_sections();

// nullptr when `path` is not a recipe key.
const RecipeKey* find_recipe_key(absl::string_view path);
// The closest key path (or section name when `path` has no dot) by edit distance, or "" when
// nothing is close enough to be a plausible typo.
std::string suggest_recipe_key(absl::string_view path);
// Closest of `choices` to `word`, or "" when none is close.
std::string closest_choice(absl::string_view word, const std::vector<std::string>& choices);

// The whole recipe as YAML that parse_recipe_string() reads back to the same values (saved in
// checkpoints so a checkpoint says how it was trained).
std::string recipe_to_yaml(const Recipe& recipe);

// docs/recipe.md, generated from the table (tests/trainer/config_docs_test.cpp keeps it in sync).
std::string recipe_reference_markdown();

}  // namespace moefold
