// YAML → Recipe through the schema table, keeping where every key was set for later messages.
#include "trainer/config_parse.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "trainer/config_schema.h"
#include "trainer/config_validate.h"

namespace moefold {
namespace {

absl::Status error_at(const std::string& where, absl::string_view what, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what, ": ", reason));
}

std::string did_you_mean(const std::string& suggestion) {
  return suggestion.empty() ? "" : absl::StrCat(" (did you mean ", suggestion, "?)");
}

std::string line_of(const std::string& source, const YAML::Node& node) {
  return absl::StrCat(source, ":", node.Mark().line + 1);
}

// moe_layer_freq n > 0 becomes the explicit per-layer pattern once num_layers is final.
void expand_moe_layer_pattern(ModelConfig& model) {
  MoeConfig& moe = model.moe;
  if (moe.moe_layer_freq <= 0) return;
  moe.moe_layer_pattern.assign(model.num_layers, 0);
  for (int layer = 0; layer < model.num_layers; ++layer) {
    moe.moe_layer_pattern[layer] = layer % moe.moe_layer_freq == 0 ? 1 : 0;
  }
}

absl::Status parse_section(const std::string& source, const std::string& section,
                           const YAML::Node& keys, Recipe& recipe) {
  if (keys.IsNull()) return absl::OkStatus();
  if (!keys.IsMap()) {
    return error_at(line_of(source, keys), section, "expected a map of keys");
  }
  std::set<std::string> seen;
  for (const auto& entry : keys) {
    const YAML::Node& name = entry.first;
    const std::string where = line_of(source, name);
    if (!name.IsScalar()) return error_at(where, section, "expected a key name");
    const std::string path = absl::StrCat(section, ".", name.Scalar());
    const RecipeKey* key = find_recipe_key(path);
    if (key == nullptr) {
      return error_at(where, path,
                      absl::StrCat("unknown key", did_you_mean(suggest_recipe_key(path))));
    }
    if (!seen.insert(path).second) {
      return error_at(where, path,
                      absl::StrCat("set twice (first at ", recipe.key_locations[path], ")"));
    }
    if (absl::Status status = key->assign(entry.second, recipe); !status.ok()) {
      return error_at(where, path, status.message());
    }
    recipe.key_locations[path] = where;
  }
  return absl::OkStatus();
}

absl::Status parse_root(const std::string& source, const YAML::Node& root, Recipe& recipe) {
  if (root.IsNull()) return absl::OkStatus();
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        line_of(source, root), ": a recipe is a map of sections (model, moe, parallel, ...)"));
  }
  std::set<std::string> seen;
  for (const auto& entry : root) {
    const YAML::Node& name = entry.first;
    const std::string where = line_of(source, name);
    if (!name.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected a section name"));
    }
    const std::string& section = name.Scalar();
    const auto& sections = recipe_sections();
    if (std::find(sections.begin(), sections.end(), section) == sections.end()) {
      std::string suggestion = suggest_recipe_key(section);
      // A key written without its section ("num_layers:") is found by its name.
      if (suggestion.empty()) suggestion = suggest_recipe_key(absl::StrCat(".", section));
      return error_at(where, section, absl::StrCat("unknown section", did_you_mean(suggestion)));
    }
    if (!seen.insert(section).second) return error_at(where, section, "section given twice");
    if (absl::Status status = parse_section(source, section, entry.second, recipe); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status apply_recipe_override(const std::string& assignment, Recipe& recipe) {
  const std::string where = absl::StrCat("--set ", assignment);
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected section.key=value, e.g. training.train_iters=100"));
  }
  const std::string path = assignment.substr(0, equals);
  const RecipeKey* key = find_recipe_key(path);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": unknown key", did_you_mean(suggest_recipe_key(path))));
  }
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(equals + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": YAML syntax error: ", e.msg));
  }
  if (absl::Status status = key->assign(value, recipe); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", status.message()));
  }
  recipe.key_locations[path] = where;
  return absl::OkStatus();
}

namespace {

// Control characters of the recipe's own text (a key, a value, YAML's quote of a bad escape)
// written visibly, so that an error stays one line (found by fuzz/recipe_fuzzer).
std::string one_line(absl::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 && c != '\t') {
      out += absl::StrFormat("\\x%02x", u);
    } else {
      out += c;
    }
  }
  return out;
}

absl::StatusOr<Recipe> parse_recipe_text(const std::string& yaml_text,
                                         const std::string& source_name,
                                         const std::vector<std::string>& overrides) {
  Recipe recipe;
  recipe.source = source_name;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": YAML syntax error: ", e.msg));
  }
  if (absl::Status status = parse_root(source_name, root, recipe); !status.ok()) return status;
  for (const std::string& assignment : overrides) {
    if (absl::Status status = apply_recipe_override(assignment, recipe); !status.ok()) {
      return status;
    }
  }
  expand_moe_layer_pattern(recipe.model);
  if (absl::Status status = validate_recipe(recipe); !status.ok()) return status;
  return recipe;
}

}  // namespace

absl::StatusOr<Recipe> parse_recipe_string(const std::string& yaml_text,
                                           const std::string& source_name,
                                           const std::vector<std::string>& overrides) {
  auto recipe = parse_recipe_text(yaml_text, source_name, overrides);
  if (recipe.ok()) return recipe;
  return absl::Status(recipe.status().code(), one_line(recipe.status().message()));
}

absl::StatusOr<Recipe> load_recipe(const std::string& path,
                                   const std::vector<std::string>& overrides) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    return absl::NotFoundError(absl::StrCat(path, ": recipe file not found"));
  }
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": recipe is not a regular file"));
  }
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  if (!file) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read recipe file"));
  return parse_recipe_string(text.str(), path, overrides);
}

}  // namespace moefold
