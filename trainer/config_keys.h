// Typed builders of recipe keys (RecipeKey, config_schema.h), which the schema table is written
// with: each key checks a YAML value's type and range and stores it in one field of the Recipe,
// and shows the field's value back (the docs' default column). A field is given as a lambda
// returning a reference to it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trainer/config_schema.h"

namespace moefold::recipe_keys {

inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline constexpr double kMaxInt = std::numeric_limits<int>::max();

// "nothing", "a list", "a map" or the quoted scalar, for error messages.
std::string describe(const YAML::Node& value);
// "≥ 1", "0 … 1", "" for an unbounded range.
std::string range_text(double lo, double hi);
absl::Status out_of_range(const YAML::Node& value, double lo, double hi);
// "\"x\" is not one of a, b (did you mean b?)" for an unknown choice.
absl::Status not_a_choice(const YAML::Node& value, const std::vector<std::string>& choices);
RecipeKey make_key(std::string path, std::string type, std::string range, std::string meaning);
std::string show_string(const std::string& text);  // "" shows as ""

template <typename Field>
using FieldType = std::remove_reference_t<std::invoke_result_t<Field, Recipe&>>;

// An int, int64, uint64 or float key with an inclusive range [lo, hi].
template <typename Field>
RecipeKey number_key(std::string path, Field field, double lo, double hi, std::string meaning) {
  using T = FieldType<Field>;
  static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>);
  constexpr bool kIntegral = std::is_integral_v<T>;
  RecipeKey key = make_key(std::move(path), kIntegral ? "int" : "float", range_text(lo, hi),
                           std::move(meaning));
  key.assign = [field, lo, hi](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    const std::string text = value.IsScalar() ? value.Scalar() : "";
    if constexpr (kIntegral) {
      int64_t parsed = 0;
      uint64_t parsed_unsigned = 0;
      const bool ok = std::is_unsigned_v<T> ? absl::SimpleAtoi(text, &parsed_unsigned)
                                            : absl::SimpleAtoi(text, &parsed);
      if (!value.IsScalar() || !ok) {
        return absl::InvalidArgumentError(absl::StrCat(
            "expected ", std::is_unsigned_v<T> ? "a non-negative integer" : "an integer", ", got ",
            describe(value)));
      }
      if constexpr (std::is_unsigned_v<T>) {
        field(recipe) = static_cast<T>(parsed_unsigned);
      } else {
        if (static_cast<double>(parsed) < lo || static_cast<double>(parsed) > hi ||
            parsed < std::numeric_limits<T>::min() || parsed > std::numeric_limits<T>::max()) {
          return out_of_range(value, lo, hi);
        }
        field(recipe) = static_cast<T>(parsed);
      }
    } else {
      double parsed = 0;
      if (!value.IsScalar() || !absl::SimpleAtod(text, &parsed) || !std::isfinite(parsed)) {
        return absl::InvalidArgumentError(absl::StrCat("expected a number, got ", describe(value)));
      }
      if (parsed < lo || parsed > hi || std::abs(parsed) > std::numeric_limits<T>::max()) {
        return out_of_range(value, lo, hi);
      }
      field(recipe) = static_cast<T>(parsed);
    }
    return absl::OkStatus();
  };
  key.show = [field](Recipe& recipe) { return absl::StrCat(field(recipe)); };
  return key;
}

template <typename Field>
RecipeKey bool_key(std::string path, Field field, std::string meaning) {
  static_assert(std::is_same_v<FieldType<Field>, bool>);
  RecipeKey key = make_key(std::move(path), "bool", "", std::move(meaning));
  key.assign = [field](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    const std::string text = value.IsScalar() ? absl::AsciiStrToLower(value.Scalar()) : "";
    if (text != "true" && text != "false") {
      return absl::InvalidArgumentError(
          absl::StrCat("expected true or false, got ", describe(value)));
    }
    field(recipe) = text == "true";
    return absl::OkStatus();
  };
  key.show = [field](Recipe& recipe) { return field(recipe) ? "true" : "false"; };
  return key;
}

// A free string; with `choices`, one of them.
template <typename Field>
RecipeKey string_key(std::string path, Field field, std::string meaning,
                     std::vector<std::string> choices = {}) {
  static_assert(std::is_same_v<FieldType<Field>, std::string>);
  std::vector<std::string> shown;
  for (const std::string& choice : choices) shown.push_back(show_string(choice));
  RecipeKey key =
      make_key(std::move(path), choices.empty() ? "string" : absl::StrJoin(shown, " or "), "",
               std::move(meaning));
  key.assign = [field, choices](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    if (!value.IsNull() && !value.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat("expected a string, got ", describe(value)));
    }
    // YAML reads a bare `null` as no value; where "null" is a choice (data.tokenizer_type) it
    // means that choice.
    const bool null_choice = std::find(choices.begin(), choices.end(), "null") != choices.end();
    const std::string text = value.IsNull() ? (null_choice ? "null" : "") : value.Scalar();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), text) == choices.end()) {
      return not_a_choice(value, choices);
    }
    field(recipe) = text;
    return absl::OkStatus();
  };
  key.show = [field](Recipe& recipe) { return show_string(field(recipe)); };
  return key;
}

// An enum class field; `choices` are its spellings in enumerator order.
template <typename Field>
RecipeKey enum_key(std::string path, Field field, std::vector<std::string> choices,
                   std::string meaning) {
  using T = FieldType<Field>;
  static_assert(std::is_enum_v<T>);
  RecipeKey key = make_key(std::move(path), absl::StrJoin(choices, " or "), "", std::move(meaning));
  key.assign = [field, choices](const YAML::Node& value, Recipe& recipe) -> absl::Status {
    for (size_t i = 0; value.IsScalar() && i < choices.size(); ++i) {
      if (value.Scalar() == choices[i]) {
        field(recipe) = static_cast<T>(i);
        return absl::OkStatus();
      }
    }
    return not_a_choice(value, choices);
  };
  key.show = [field, choices](Recipe& recipe) {
    return choices[static_cast<size_t>(field(recipe))];
  };
  return key;
}

// Megatron's --data-path: "prefix", "0.8 a 0.2 b", or the same tokens as a YAML list.
RecipeKey data_path_key();
// Megatron's moe_layer_freq: an int n (layer l is MoE iff l % n == 0) or a list of 0/1 per layer.
RecipeKey moe_layer_freq_key();

}  // namespace moefold::recipe_keys
