#include "parallel/layout.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "tensor/check.h"

namespace moefold {
namespace {

constexpr std::array<const char*, 5> kAxisNames = {"tp", "cp", "ep", "dp", "pp"};

// Sizes of the five axes on one side, by name.
struct AxisSizes {
  int tp = 1, cp = 1, ep = 1, dp = 1, pp = 1;
  int of(const std::string& axis) const {
    if (axis == "tp") return tp;
    if (axis == "cp") return cp;
    if (axis == "ep") return ep;
    if (axis == "dp") return dp;
    MOEFOLD_CHECK(axis == "pp", axis);
    return pp;
  }
};

// Both sides resolved against the order string: axes first-fastest with their sizes.
struct ResolvedLayout {
  std::vector<std::string> axes;  // normalised order, all five axes
  std::vector<int> attention_sizes;
  std::vector<int> expert_sizes;
  AxisSizes attention;
  AxisSizes expert;
};

std::vector<bool> mask_of(const std::vector<std::string>& axes,
                          std::initializer_list<const char*> wanted) {
  std::vector<bool> mask(axes.size(), false);
  for (const char* name : wanted) {
    const auto it = std::find(axes.begin(), axes.end(), name);
    MOEFOLD_CHECK(it != axes.end(), name);
    mask[it - axes.begin()] = true;
  }
  return mask;
}

absl::Status check_at_least(const char* key, int value, int minimum) {
  if (value < minimum) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.", key, " is ", value, "; it must be at least ", minimum));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> parse_order(const std::string& order,
                                                     const AxisSizes& attention,
                                                     const AxisSizes& expert) {
  std::string lower = order;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::vector<std::string> axes;
  for (const std::string& token : std::vector<std::string>(absl::StrSplit(lower, '-'))) {
    if (std::find(kAxisNames.begin(), kAxisNames.end(), token) == kAxisNames.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "parallel.order \"", order, "\" has unknown axis \"", token,
          "\"; use a dash-separated list of tp, cp, ep, dp, pp (e.g. tp-cp-ep-dp-pp)"));
    }
    if (std::find(axes.begin(), axes.end(), token) != axes.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel.order \"", order, "\" names axis \"", token, "\" twice"));
    }
    axes.push_back(token);
  }
  // As Megatron-Core: an axis left out is appended (slowest) when its size is 1 on both sides.
  for (const char* name : kAxisNames) {
    if (std::find(axes.begin(), axes.end(), name) != axes.end()) continue;
    const int size = std::max(attention.of(name), expert.of(name));
    if (size != 1) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.order \"", order,
                                                     "\" leaves out axis \"", name,
                                                     "\" whose size is ", size));
    }
    axes.push_back(name);
  }
  return axes;
}

absl::StatusOr<ResolvedLayout> resolve(const ParallelConfig& config, int world_size) {
  if (world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("world size is ", world_size, "; it must be at least 1"));
  }
  for (const absl::Status& status :
       {check_at_least("tensor_model_parallel_size", config.tensor_model_parallel_size, 1),
        check_at_least("context_parallel_size", config.context_parallel_size, 1),
        check_at_least("pipeline_model_parallel_size", config.pipeline_model_parallel_size, 1),
        check_at_least("expert_model_parallel_size", config.expert_model_parallel_size, 1),
        check_at_least("expert_tensor_parallel_size", config.expert_tensor_parallel_size, 0),
        check_at_least("virtual_pipeline_model_parallel_size",
                       config.virtual_pipeline_model_parallel_size, 0)}) {
    if (!status.ok()) return status;
  }
  const int64_t tp = config.tensor_model_parallel_size;
  const int64_t cp = config.context_parallel_size;
  const int64_t pp = config.pipeline_model_parallel_size;
  const int64_t ep = config.expert_model_parallel_size;
  const int64_t etp = config.expert_tensor_parallel();
  if (config.virtual_pipeline_model_parallel_size > 0 && pp < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.virtual_pipeline_model_parallel_size ",
        config.virtual_pipeline_model_parallel_size,
        " needs pipeline_model_parallel_size > 1 (it is ", pp, ")"));
  }
  if (world_size % (tp * cp * pp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world size ", world_size, " is not divisible by tensor_model_parallel_size ", tp,
        " x context_parallel_size ", cp, " x pipeline_model_parallel_size ", pp, " = ",
        tp * cp * pp));
  }
  if (world_size % (etp * ep * pp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert_tensor_parallel_size ", etp, " x expert_model_parallel_size ", ep, " = ",
        etp * ep, " does not divide the ", world_size / pp,
        " ranks of a pipeline stage (world size ", world_size,
        " / pipeline_model_parallel_size ", pp, ")"));
  }
  ResolvedLayout resolved;
  resolved.attention = {static_cast<int>(tp), static_cast<int>(cp), 1,
                        static_cast<int>(world_size / (tp * cp * pp)), static_cast<int>(pp)};
  resolved.expert = {static_cast<int>(etp), 1, static_cast<int>(ep),
                     static_cast<int>(world_size / (etp * ep * pp)), static_cast<int>(pp)};
  absl::StatusOr<std::vector<std::string>> axes =
      parse_order(config.order, resolved.attention, resolved.expert);
  if (!axes.ok()) return axes.status();
  resolved.axes = *std::move(axes);
  for (const std::string& axis : resolved.axes) {
    resolved.attention_sizes.push_back(resolved.attention.of(axis));
    resolved.expert_sizes.push_back(resolved.expert.of(axis));
  }
  // Megatron-Core's rule: with PP not slowest, both sides need the same data-parallel size.
  if (resolved.axes.back() != "pp" && pp > 1 && resolved.attention.dp != resolved.expert.dp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.order \"", config.order, "\" does not end with pp, so the expert data-parallel ",
        "size (", resolved.expert.dp, ") must equal the data-parallel size (",
        resolved.attention.dp, ")"));
  }
  const std::vector<RankGroup> attention_pp =
      masked_orthogonal_groups(resolved.attention_sizes, mask_of(resolved.axes, {"pp"}));
  const std::vector<RankGroup> expert_pp =
      masked_orthogonal_groups(resolved.expert_sizes, mask_of(resolved.axes, {"pp"}));
  if (attention_pp != expert_pp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.order \"", config.order, "\" gives different pipeline groups on the attention ",
        "side (first: [", absl::StrJoin(attention_pp.front(), ","), "]) and the expert side (",
        "first: [", absl::StrJoin(expert_pp.front(), ","), "]); put pp last"));
  }
  return resolved;
}

void decompose(int rank, const std::vector<int>& sizes, const std::vector<std::string>& axes,
               AxisSizes& index) {
  for (size_t a = 0; a < sizes.size(); ++a) {
    const int value = rank % sizes[a];
    rank /= sizes[a];
    if (axes[a] == "tp") index.tp = value;
    if (axes[a] == "cp") index.cp = value;
    if (axes[a] == "ep") index.ep = value;
    if (axes[a] == "dp") index.dp = value;
    if (axes[a] == "pp") index.pp = value;
  }
}

}  // namespace

const char* group_kind_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp: return "tp";
    case GroupKind::kCp: return "cp";
    case GroupKind::kDp: return "dp";
    case GroupKind::kPp: return "pp";
    case GroupKind::kDpCp: return "dp_cp";
    case GroupKind::kTpCp: return "tp_cp";
    case GroupKind::kTpCpDp: return "tp_cp_dp";
    case GroupKind::kTpPp: return "tp_pp";
    case GroupKind::kEp: return "ep";
    case GroupKind::kEtp: return "etp";
    case GroupKind::kEdp: return "edp";
    case GroupKind::kEtpEp: return "etp_ep";
    case GroupKind::kEtpEpPp: return "etp_ep_pp";
    case GroupKind::kEmbedding: return "embedding";
  }
  MOEFOLD_CHECK(false, "unknown group kind " << static_cast<int>(kind));
}

std::array<GroupKind, kNumGroupKinds> all_group_kinds() {
  std::array<GroupKind, kNumGroupKinds> kinds;
  for (int k = 0; k < kNumGroupKinds; ++k) kinds[k] = static_cast<GroupKind>(k);
  return kinds;
}

const RankGroup* RankLayout::group_of(GroupKind kind, int rank) const {
  MOEFOLD_CHECK(rank >= 0 && rank < world_size, "rank " << rank << " of " << world_size);
  const int index = group_index[rank][static_cast<int>(kind)];
  return index < 0 ? nullptr : &groups[static_cast<int>(kind)][index];
}

std::vector<RankGroup> masked_orthogonal_groups(const std::vector<int>& sizes,
                                                const std::vector<bool>& mask) {
  MOEFOLD_CHECK(sizes.size() == mask.size());
  std::vector<int> masked_sizes, masked_strides, unmasked_sizes, unmasked_strides;
  int stride = 1;
  for (size_t a = 0; a < sizes.size(); ++a) {
    (mask[a] ? masked_sizes : unmasked_sizes).push_back(sizes[a]);
    (mask[a] ? masked_strides : unmasked_strides).push_back(stride);
    stride *= sizes[a];
  }
  // The global rank of (group index, position) sums each axis' coordinate times its stride,
  // decomposing both indices first-fastest over their axes.
  auto offset = [](int index, const std::vector<int>& axis_sizes,
                   const std::vector<int>& axis_strides) {
    int result = 0;
    for (size_t a = 0; a < axis_sizes.size(); ++a) {
      result += (index % axis_sizes[a]) * axis_strides[a];
      index /= axis_sizes[a];
    }
    return result;
  };
  int group_size = 1, num_groups = 1;
  for (int s : masked_sizes) group_size *= s;
  for (int s : unmasked_sizes) num_groups *= s;
  std::vector<RankGroup> groups(num_groups, RankGroup(group_size));
  for (int g = 0; g < num_groups; ++g) {
    const int base = offset(g, unmasked_sizes, unmasked_strides);
    for (int p = 0; p < group_size; ++p) {
      groups[g][p] = base + offset(p, masked_sizes, masked_strides);
    }
  }
  return groups;
}

absl::Status validate_parallel_config(const ParallelConfig& config, int world_size) {
  return resolve(config, world_size).status();
}

absl::StatusOr<RankLayout> build_rank_layout(const ParallelConfig& config, int world_size) {
  absl::StatusOr<ResolvedLayout> resolved_or = resolve(config, world_size);
  if (!resolved_or.ok()) return resolved_or.status();
  const ResolvedLayout& resolved = *resolved_or;
  const std::vector<std::string>& axes = resolved.axes;

  RankLayout layout;
  layout.world_size = world_size;
  layout.order = absl::StrJoin(axes, "-");
  layout.coordinates.resize(world_size);
  for (int rank = 0; rank < world_size; ++rank) {
    AxisSizes a, e;
    decompose(rank, resolved.attention_sizes, axes, a);
    decompose(rank, resolved.expert_sizes, axes, e);
    MOEFOLD_CHECK(a.pp == e.pp, "rank " << rank);
    RankCoordinates& c = layout.coordinates[rank];
    c.world_rank = rank;
    c.world_size = world_size;
    c.tp_rank = a.tp, c.tp_size = resolved.attention.tp;
    c.cp_rank = a.cp, c.cp_size = resolved.attention.cp;
    c.dp_rank = a.dp, c.dp_size = resolved.attention.dp;
    c.pp_rank = a.pp, c.pp_size = resolved.attention.pp;
    c.etp_rank = e.tp, c.etp_size = resolved.expert.tp;
    c.ep_rank = e.ep, c.ep_size = resolved.expert.ep;
    c.edp_rank = e.dp, c.edp_size = resolved.expert.dp;
  }

  auto attention = [&](std::initializer_list<const char*> wanted) {
    return masked_orthogonal_groups(resolved.attention_sizes, mask_of(axes, wanted));
  };
  auto expert = [&](std::initializer_list<const char*> wanted) {
    return masked_orthogonal_groups(resolved.expert_sizes, mask_of(axes, wanted));
  };
  auto set = [&](GroupKind kind, std::vector<RankGroup> groups) {
    layout.groups[static_cast<int>(kind)] = std::move(groups);
  };
  set(GroupKind::kTp, attention({"tp"}));
  set(GroupKind::kCp, attention({"cp"}));
  set(GroupKind::kDp, attention({"dp"}));
  set(GroupKind::kPp, attention({"pp"}));
  set(GroupKind::kDpCp, attention({"dp", "cp"}));
  set(GroupKind::kTpCp, attention({"tp", "cp"}));
  set(GroupKind::kTpCpDp, attention({"tp", "cp", "dp"}));
  set(GroupKind::kTpPp, attention({"tp", "pp"}));
  set(GroupKind::kEp, expert({"ep"}));
  set(GroupKind::kEtp, expert({"tp"}));
  set(GroupKind::kEdp, expert({"dp"}));
  set(GroupKind::kEtpEp, expert({"tp", "ep"}));
  set(GroupKind::kEtpEpPp, expert({"tp", "ep", "pp"}));
  std::vector<RankGroup> embedding;
  for (const RankGroup& pp_group : layout.groups_of(GroupKind::kPp)) {
    embedding.push_back(pp_group.size() == 1 ? RankGroup{pp_group.front()}
                                             : RankGroup{pp_group.front(), pp_group.back()});
  }
  set(GroupKind::kEmbedding, std::move(embedding));

  std::array<int, kNumGroupKinds> none;
  none.fill(-1);
  layout.group_index.assign(world_size, none);
  for (GroupKind kind : all_group_kinds()) {
    const std::vector<RankGroup>& groups = layout.groups_of(kind);
    for (int g = 0; g < static_cast<int>(groups.size()); ++g) {
      for (int member : groups[g]) {
        int& slot = layout.group_index[member][static_cast<int>(kind)];
        MOEFOLD_CHECK(slot == -1, "rank " << member << " in two " << group_kind_name(kind)
                                          << " groups");
        slot = g;
      }
    }
  }
  return layout;
}

absl::Status validate_model_divisibility(const ParallelConfig& config, int num_layers,
                                         int num_heads, int num_query_groups, int num_experts,
                                         int padded_vocab) {
  const int tp = config.tensor_model_parallel_size;
  const int pp = config.pipeline_model_parallel_size;
  const int vpp = config.virtual_pipeline_model_parallel_size;
  const int ep = config.expert_model_parallel_size;
  auto not_divisible = [](const char* what, int value, const char* by, int divisor) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", value, " is not divisible by ", by,
                                                   " ", divisor));
  };
  if (tp < 1 || pp < 1 || ep < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel sizes must be at least 1 (tensor_model_parallel_size ", tp,
        ", pipeline_model_parallel_size ", pp, ", expert_model_parallel_size ", ep, ")"));
  }
  if (num_layers < pp) {
    return absl::InvalidArgumentError(absl::StrCat("num_layers ", num_layers,
                                                   " is fewer than pipeline_model_parallel_size ",
                                                   pp, " stages"));
  }
  // An uneven split is checked, with the rest of the stage split, by model/stage_partition.h.
  const bool uneven = config.decoder_first_pipeline_num_layers > 0 ||
                      config.decoder_last_pipeline_num_layers > 0;
  if (!uneven && num_layers % pp != 0) {
    return not_divisible("num_layers", num_layers, "pipeline_model_parallel_size", pp);
  }
  if (!uneven && vpp > 0 && num_layers % (pp * vpp) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_layers ", num_layers, " is not divisible by pipeline_model_parallel_size ", pp,
        " x virtual_pipeline_model_parallel_size ", vpp, " = ", pp * vpp));
  }
  if (num_heads % tp != 0) {
    return not_divisible("num_attention_heads", num_heads, "tensor_model_parallel_size", tp);
  }
  if (num_query_groups % tp != 0) {
    return not_divisible("num_query_groups", num_query_groups, "tensor_model_parallel_size", tp);
  }
  if (num_experts > 0 && num_experts % ep != 0) {
    return not_divisible("num_experts", num_experts, "expert_model_parallel_size", ep);
  }
  if (num_experts == 0 && ep > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert_model_parallel_size ", ep, " needs an MoE model (num_experts is 0)"));
  }
  if (padded_vocab % tp != 0) {
    return not_divisible("padded vocabulary size", padded_vocab, "tensor_model_parallel_size",
                         tp);
  }
  return absl::OkStatus();
}

}  // namespace moefold
