// The one declarative table of how each MODEL.md parameter is split across ranks (STYLE.md 9):
// column-wise (output rows over TP), row-wise (input columns over TP), vocabulary rows over TP,
// and expert weights over EP (expert axis) and ETP (the F axis). Norms, the router and the
// expert bias are replicated. The layers build their layouts through shard_layout, so a rank's
// local shapes follow from this table and its coordinates alone.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/parameter.h"
#include "parallel/coordinates.h"

namespace moefold {

enum class ShardStyle {
  kReplicated,
  kColumnwise,        // [out, in]: out split over TP
  kRowwise,           // [out, in]: in split over TP
  kVocab,             // [V, H]: V split over TP
  kExpertColumnwise,  // [E, F, H]: E over EP, F over ETP
  kExpertRowwise,     // [E, H, F]: E over EP, F over ETP
};

// The style of a MODEL.md name ("layers/3/attn/wo" → kRowwise); kReplicated when no rule matches.
ShardStyle sharding_style(const std::string& name);

// The layout of `name` on the rank with `coords`, per the table.
TensorLayout shard_layout(const std::string& name, std::vector<int64_t> global_shape,
                          const RankCoordinates& coords);

// Under FSSDP an expert weight's ETP slice is split once more, over expert-DP along the same F
// axis: the shard this rank stores (its materialised form is `materialised`, the plain layout).
TensorLayout fully_sharded_expert_layout(const TensorLayout& materialised,
                                         const RankCoordinates& coords);

}  // namespace moefold
