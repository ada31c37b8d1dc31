#include "planner/routing_skew.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moefold {

absl::StatusOr<double> routing_imbalance_from_metrics(const std::string& path, int num_experts,
                                                      int expert_parallel_size) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the metrics file"));
  if (expert_parallel_size < 1 || num_experts % expert_parallel_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", num_experts,
                                                   " experts cannot be split over EP ",
                                                   expert_parallel_size));
  }
  const int per_rank = num_experts / expert_parallel_size;
  double sum = 0;
  int samples = 0, line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.empty()) continue;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    const std::string where = absl::StrCat(path, ":", line_number, ": ");
    if (record.is_discarded()) return absl::InvalidArgumentError(where + "not a JSON object");
    if (record.value("kind", "") != "train" || !record.contains("moe")) continue;
    for (const nlohmann::json& layer : record["moe"]) {
      if (!layer.contains("tokens_per_expert") || !layer["tokens_per_expert"].is_array()) {
        return absl::InvalidArgumentError(where + "moe layer without tokens_per_expert");
      }
      const std::vector<double> tokens = layer["tokens_per_expert"].get<std::vector<double>>();
      if (static_cast<int>(tokens.size()) != num_experts) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "tokens_per_expert has ", tokens.size(), " experts, the recipe ", num_experts));
      }
      std::vector<double> ranks(expert_parallel_size, 0);
      for (int e = 0; e < num_experts; ++e) ranks[e / per_rank] += tokens[e];
      double total = 0;
      for (double r : ranks) total += r;
      if (total <= 0) continue;
      sum += *std::max_element(ranks.begin(), ranks.end()) / (total / expert_parallel_size);
      ++samples;
    }
  }
  if (samples == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no training record with expert loads (\"moe\" tokens_per_expert)"));
  }
  return sum / samples;
}

}  // namespace moefold
