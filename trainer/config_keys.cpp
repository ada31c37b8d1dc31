#include "trainer/config_keys.h"

#include "absl/strings/str_split.h"

namespace moefold::recipe_keys {

std::string describe(const YAML::Node& value) {
  if (!value.IsDefined() || value.IsNull()) return "nothing";
  if (value.IsSequence()) return "a list";
  if (value.IsMap()) return "a map";
  return absl::StrCat("\"", value.Scalar(), "\"");
}

namespace {

std::string format_number(double x) { return absl::StrCat(x); }

}  // namespace

std::string range_text(double lo, double hi) {
  if (lo == -kInf && hi == kInf) return "";
  if (hi == kInf || hi == kMaxInt) return absl::StrCat("≥ ", format_number(lo));
  if (lo == -kInf) return absl::StrCat("≤ ", format_number(hi));
  return absl::StrCat(format_number(lo), " … ", format_number(hi));
}

absl::Status out_of_range(const YAML::Node& value, double lo, double hi) {
  return absl::InvalidArgumentError(
      absl::StrCat(value.Scalar(), " is out of range (must be ", range_text(lo, hi), ")"));
}

absl::Status not_a_choice(const YAML::Node& value, const std::vector<std::string>& choices) {
  std::string message =
      absl::StrCat(describe(value), " is not one of ", absl::StrJoin(choices, ", "));
  if (value.IsScalar()) {
    const std::string close = closest_choice(value.Scalar(), choices);
    if (!close.empty()) absl::StrAppend(&message, " (did you mean ", close, "?)");
  }
  return absl::InvalidArgumentError(message);
}

RecipeKey make_key(std::string path, std::string type, std::string range, std::string meaning) {
  RecipeKey key;
  key.path = std::move(path);
  key.type = std::move(type);
  key.range = std::move(range);
  key.meaning = std::move(meaning);
  return key;
}

std::string show_string(const std::string& text) { return text.empty() ? "\"\"" : text; }

RecipeKey data_path_key() {
  RecipeKey key =
      make_key("data.data_path", "string or list", "",
               "Dataset prefixes (PREFIX.bin/PREFIX.idx): one prefix, or a weighted blend "
               "\"0.8 prefix_a 0.2 prefix_b\" (as one string or as a list of the same tokens).");
  key.assign = [](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    std::vector<std::string> tokens;
    auto add_tokens = [&tokens](const std::string& text) {
      for (absl::string_view token : absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
        tokens.emplace_back(token);
      }
    };
    if (value.IsScalar()) {
      add_tokens(value.Scalar());
    } else if (value.IsSequence()) {
      for (const YAML::Node& item : value) {
        if (!item.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat("expected a list of strings, got an item that is ", describe(item)));
        }
        add_tokens(item.Scalar());
      }
    } else if (!value.IsNull()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected a string or a list of strings, got ", describe(value)));
    }
    recipe.data.data_path = std::move(tokens);
    return absl::OkStatus();
  };
  key.show = [](Recipe& recipe) {
    return recipe.data.data_path.empty() ? "[]" : absl::StrJoin(recipe.data.data_path, " ");
  };
  return key;
}

RecipeKey moe_layer_freq_key() {
  RecipeKey key = make_key(
      "moe.moe_layer_freq", "int or list of 0/1", "≥ 1",
      "Which layers are MoE: n means layer l is MoE iff l % n == 0; a list gives 0 (dense) or 1 "
      "(MoE) for each of the num_layers layers, e.g. [0, 1, 1, 1].");
  key.assign = [](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    MoeConfig& moe = recipe.model.moe;
    int64_t every = 0;
    if (value.IsScalar() && absl::SimpleAtoi(value.Scalar(), &every)) {
      if (every < 1 || every > kMaxInt) return out_of_range(value, 1, kMaxInt);
      moe.moe_layer_freq = static_cast<int>(every);
      moe.moe_layer_pattern.clear();
      return absl::OkStatus();
    }
    if (!value.IsSequence()) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected an integer or a list of 0/1, got ", describe(value)));
    }
    std::vector<int> pattern;
    for (const YAML::Node& item : value) {
      if (!item.IsScalar() || (item.Scalar() != "0" && item.Scalar() != "1")) {
        return absl::InvalidArgumentError(
            absl::StrCat("list entries must be 0 or 1, got ", describe(item)));
      }
      pattern.push_back(item.Scalar() == "1" ? 1 : 0);
    }
    moe.moe_layer_freq = 0;
    moe.moe_layer_pattern = std::move(pattern);
    return absl::OkStatus();
  };
  key.show = [](Recipe& recipe) {
    const MoeConfig& moe = recipe.model.moe;
    if (moe.moe_layer_freq > 0) return absl::StrCat(moe.moe_layer_freq);
    return absl::StrCat("[", absl::StrJoin(moe.moe_layer_pattern, ", "), "]");
  };
  return key;
}

}  // namespace moefold::recipe_keys
