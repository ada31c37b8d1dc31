// Human and machine views of a RankLayout, for `moefold layout`: users see what folding does
// before launching.
#pragma once

#include <string>

#include "parallel/layout.h"

namespace moefold {

// A header with the sizes of both sides, then one row per rank (its coordinates on both sides
// and the members of each of its groups), then every group of each kind.
std::string format_layout_table(const RankLayout& layout);

// {"world_size", "order", "sizes": {...}, "ranks": [{"rank", coordinates..., "groups":
// {kind: [members]}}], "groups": {kind: [[members]...]}}.
std::string format_layout_json(const RankLayout& layout);

}  // namespace moefold
