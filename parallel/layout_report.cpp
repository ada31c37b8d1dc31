#include "parallel/layout_report.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold {
namespace {

std::string bracketed(const RankGroup& group) {
  return absl::StrCat("[", absl::StrJoin(group, ","), "]");
}

std::string pad_left(const std::string& text, size_t width) {
  return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
}

std::string pad_right(const std::string& text, size_t width) {
  return text + std::string(width > text.size() ? width - text.size() : 0, ' ');
}

}  // namespace

std::string format_layout_table(const RankLayout& layout) {
  const RankCoordinates& c0 = layout.coordinates.front();
  std::string out = absl::StrCat(
      "world size ", layout.world_size, ", order ", layout.order, "\n",
      "  attention side: TP ", c0.tp_size, " x CP ", c0.cp_size, " x DP ", c0.dp_size, " x PP ",
      c0.pp_size, "\n", "  expert side:    ETP ", c0.etp_size, " x EP ", c0.ep_size, " x EDP ",
      c0.edp_size, " x PP ", c0.pp_size, "\n\n");

  // One row per rank; cells[0] is the header row.
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header = {"rank", "tp", "cp", "dp", "pp", "|", "etp", "ep", "edp", "|"};
  for (GroupKind kind : all_group_kinds()) header.push_back(group_kind_name(kind));
  cells.push_back(header);
  for (const RankCoordinates& c : layout.coordinates) {
    std::vector<std::string> row = {
        absl::StrCat(c.world_rank), absl::StrCat(c.tp_rank), absl::StrCat(c.cp_rank),
        absl::StrCat(c.dp_rank),    absl::StrCat(c.pp_rank), "|",
        absl::StrCat(c.etp_rank),   absl::StrCat(c.ep_rank), absl::StrCat(c.edp_rank),
        "|"};
    for (GroupKind kind : all_group_kinds()) {
      const RankGroup* group = layout.group_of(kind, c.world_rank);
      row.push_back(group ? bracketed(*group) : "-");
    }
    cells.push_back(std::move(row));
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  constexpr size_t kCoordinateColumns = 10;  // numbers right-aligned, group lists left-aligned
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += " ";
      line += i < kCoordinateColumns ? pad_left(row[i], width[i]) : pad_right(row[i], width[i]);
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  }

  absl::StrAppend(&out, "\ngroups\n");
  for (GroupKind kind : all_group_kinds()) {
    std::vector<std::string> groups;
    for (const RankGroup& group : layout.groups_of(kind)) groups.push_back(bracketed(group));
    absl::StrAppend(&out, "  ", pad_right(group_kind_name(kind), 10), absl::StrJoin(groups, " "),
                    "\n");
  }
  return out;
}

std::string format_layout_json(const RankLayout& layout) {
  const RankCoordinates& c0 = layout.coordinates.front();
  std::string out = absl::StrCat(
      "{\n  \"world_size\": ", layout.world_size, ",\n  \"order\": \"", layout.order, "\",\n",
      "  \"sizes\": {\"tp\": ", c0.tp_size, ", \"cp\": ", c0.cp_size, ", \"dp\": ", c0.dp_size,
      ", \"pp\": ", c0.pp_size, ", \"etp\": ", c0.etp_size, ", \"ep\": ", c0.ep_size,
      ", \"edp\": ", c0.edp_size, "},\n  \"ranks\": [\n");
  for (const RankCoordinates& c : layout.coordinates) {
    absl::StrAppend(&out, "    {\"rank\": ", c.world_rank, ", \"tp\": ", c.tp_rank,
                    ", \"cp\": ", c.cp_rank, ", \"dp\": ", c.dp_rank, ", \"pp\": ", c.pp_rank,
                    ", \"etp\": ", c.etp_rank, ", \"ep\": ", c.ep_rank, ", \"edp\": ", c.edp_rank,
                    ", \"groups\": {");
    std::vector<std::string> groups;
    for (GroupKind kind : all_group_kinds()) {
      const RankGroup* group = layout.group_of(kind, c.world_rank);
      groups.push_back(absl::StrCat("\"", group_kind_name(kind), "\": ",
                                    group ? bracketed(*group) : "null"));
    }
    absl::StrAppend(&out, absl::StrJoin(groups, ", "), "}}",
                    c.world_rank + 1 < layout.world_size ? ",\n" : "\n");
  }
  absl::StrAppend(&out, "  ],\n  \"groups\": {\n");
  for (GroupKind kind : all_group_kinds()) {
    std::vector<std::string> groups;
    for (const RankGroup& group : layout.groups_of(kind)) groups.push_back(bracketed(group));
    absl::StrAppend(&out, "    \"", group_kind_name(kind), "\": [", absl::StrJoin(groups, ", "),
                    "]", kind == GroupKind::kEmbedding ? "\n" : ",\n");
  }
  absl::StrAppend(&out, "  }\n}\n");
  return out;
}

}  // namespace moefold
