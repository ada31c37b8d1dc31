// Checks across recipe keys, run before any rank does work. Each key's own type and range are
// checked while parsing (config_schema.h); these are the rules that involve several keys.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "trainer/train_config.h"

namespace moefold {

// Checks that need no world size: head/group divisibility, top-k vs experts, moe_layer_freq
// length, router options, LR schedule, data source, checkpoint settings.
absl::Status validate_recipe(const Recipe& recipe);

// validate_recipe() plus the layout for `world_size` ranks (parallel/layout.h:
// validate_parallel_config and validate_model_divisibility) and global_batch_size divisible by
// micro_batch_size × DP. The padded vocabulary is checked only when model.vocab_size > 0, so
// call this again after filling vocab_size from the tokenizer.
absl::Status validate_recipe_for_world(const Recipe& recipe, int world_size);

// InvalidArgument naming where `key_path` was set, for errors found after parsing (also by the
// data and trainer code): "configs/x.yaml:12: moe.moe_router_topk: <reason>", or
// "--set moe.moe_router_topk=9: <reason>" for an override, or "configs/x.yaml: key: <reason>"
// for a key left at its default.
absl::Status recipe_error(const Recipe& recipe, absl::string_view key_path,
                          absl::string_view reason);

}  // namespace moefold
