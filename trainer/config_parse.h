// Reading a recipe: YAML file (or text) → Recipe, then `--set key=value` overrides, then the
// static checks of config_validate.h. Every error is one line naming file, line and key path.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/train_config.h"

namespace moefold {

// Reads the YAML recipe at `path`, applies `overrides` ("training.train_iters=100", as given to
// --set, in order) and runs validate_recipe(). A missing file is NotFound, anything else wrong
// InvalidArgument, e.g. "configs/x.yaml:4: model.hiden_size: unknown key (did you mean
// model.hidden_size?)".
absl::StatusOr<Recipe> load_recipe(const std::string& path,
                                   const std::vector<std::string>& overrides = {});

// The same from YAML text; `source_name` stands in for the file name in messages.
absl::StatusOr<Recipe> parse_recipe_string(const std::string& yaml_text,
                                           const std::string& source_name,
                                           const std::vector<std::string>& overrides = {});

// Applies one "section.key=value" override (the value is read as YAML, so "[0,1,1,1]" is a list)
// with the type and range checks of the file. Does not re-run the cross-key checks.
absl::Status apply_recipe_override(const std::string& assignment, Recipe& recipe);

}  // namespace moefold
