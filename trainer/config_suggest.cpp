// "Did you mean" suggestions for misspelt recipe keys, sections and enum values.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "trainer/config_schema.h"

namespace moefold {
namespace {

// Levenshtein distance (insert, delete, substitute each cost 1).
int edit_distance(absl::string_view a, absl::string_view b) {
  std::vector<int> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int substitute = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

// A typo is plausible when at most about a third of the word differs (at least 2 edits).
std::string closest(absl::string_view word, const std::vector<absl::string_view>& candidates) {
  const int limit = std::max<int>(2, static_cast<int>(word.size()) / 3);
  std::string best;
  int best_distance = limit + 1;
  for (absl::string_view candidate : candidates) {
    const int distance = edit_distance(word, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = std::string(candidate);
    }
  }
  return best;
}

}  // namespace

std::string closest_choice(absl::string_view word, const std::vector<std::string>& choices) {
  return closest(word, std::vector<absl::string_view>(choices.begin(), choices.end()));
}

std::string suggest_recipe_key(absl::string_view path) {
  std::vector<absl::string_view> candidates;
  if (path.find('.') == absl::string_view::npos) {
    for (const std::string& section : recipe_sections()) candidates.push_back(section);
    return closest(path, candidates);
  }
  // A key put in the wrong section ("model.num_experts") is found by its name alone.
  const absl::string_view name = path.substr(path.find('.') + 1);
  for (const RecipeKey& key : recipe_schema()) {
    if (key.name() == name) return key.path;
    candidates.push_back(key.path);
  }
  return closest(path, candidates);
}

}  // namespace moefold
