#include "model/sharding_plan.h"

#include <string_view>

#include "tensor/check.h"

namespace moefold {
namespace {

struct ShardRule {
  std::string_view suffix;  // matched against the end of the name, after a '/' or at its start
  ShardStyle style;
};

constexpr ShardRule kShardingPlan[] = {
    {"embed", ShardStyle::kVocab},
    {"lm_head", ShardStyle::kVocab},
    {"attn/wq", ShardStyle::kColumnwise},
    {"attn/wk", ShardStyle::kColumnwise},
    {"attn/wv", ShardStyle::kColumnwise},
    {"attn/wo", ShardStyle::kRowwise},
    {"mlp/w_gate", ShardStyle::kColumnwise},
    {"mlp/w_up", ShardStyle::kColumnwise},
    {"mlp/w_down", ShardStyle::kRowwise},
    {"shared/w_gate", ShardStyle::kColumnwise},
    {"shared/w_up", ShardStyle::kColumnwise},
    {"shared/w_down", ShardStyle::kRowwise},
    {"experts/w_gate", ShardStyle::kExpertColumnwise},
    {"experts/w_up", ShardStyle::kExpertColumnwise},
    {"experts/w_down", ShardStyle::kExpertRowwise},
};

bool ends_with_component(std::string_view name, std::string_view suffix) {
  if (name.size() < suffix.size() || name.substr(name.size() - suffix.size()) != suffix) {
    return false;
  }
  return name.size() == suffix.size() || name[name.size() - suffix.size() - 1] == '/';
}

}  // namespace

ShardStyle sharding_style(const std::string& name) {
  for (const ShardRule& rule : kShardingPlan) {
    if (ends_with_component(name, rule.suffix)) return rule.style;
  }
  return ShardStyle::kReplicated;
}

TensorLayout shard_layout(const std::string& name, std::vector<int64_t> global_shape,
                          const RankCoordinates& c) {
  TensorLayout layout = TensorLayout::replicated(name, std::move(global_shape));
  auto split = [&](int axis, ShardGroup group, int parts, int index) {
    if (parts > 1) layout = layout.split(axis, group, parts, index);
  };
  switch (sharding_style(name)) {
    case ShardStyle::kReplicated:
      break;
    case ShardStyle::kColumnwise:
    case ShardStyle::kVocab:
      split(0, ShardGroup::kTensor, c.tp_size, c.tp_rank);
      break;
    case ShardStyle::kRowwise:
      split(1, ShardGroup::kTensor, c.tp_size, c.tp_rank);
      break;
    case ShardStyle::kExpertColumnwise:
      split(0, ShardGroup::kExpert, c.ep_size, c.ep_rank);
      split(1, ShardGroup::kExpertTensor, c.etp_size, c.etp_rank);
      break;
    case ShardStyle::kExpertRowwise:
      split(0, ShardGroup::kExpert, c.ep_size, c.ep_rank);
      split(2, ShardGroup::kExpertTensor, c.etp_size, c.etp_rank);
      break;
  }
  return layout;
}

TensorLayout fully_sharded_expert_layout(const TensorLayout& materialised,
                                         const RankCoordinates& c) {
  const ShardStyle style = sharding_style(materialised.name);
  MOEFOLD_CHECK(style == ShardStyle::kExpertColumnwise || style == ShardStyle::kExpertRowwise,
                materialised.name << " is not a routed-expert weight");
  const int f_axis = style == ShardStyle::kExpertColumnwise ? 1 : 2;
  if (c.edp_size == 1) return materialised;
  return materialised.split(f_axis, ShardGroup::kExpertData, c.edp_size, c.edp_rank);
}

}  // namespace moefold
