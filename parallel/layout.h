// Rank layout of MoE Parallel Folding: one pure function (no MPI) turning (world size, sizes,
// order) into every rank group, as Megatron-Core's RankGenerator does.
//
// The order string (default "tp-cp-ep-dp-pp") lists the axes first-fastest. The attention side
// enumerates the ranks over TP x CP x DP x PP (EP size 1); the expert side enumerates the same
// ranks over ETP x EP x EDP x PP with the same string, ETP taking TP's place, EDP taking DP's
// place and CP size 1. Both sides must produce identical PP groups.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "parallel/coordinates.h"
#include "parallel/parallel_config.h"

namespace moefold {

enum class GroupKind {
  // Attention side.
  kTp,
  kCp,
  kDp,
  kPp,
  kDpCp,    // dense gradient reduction
  kTpCp,    // router statistics
  kTpCpDp,  // expert-bias token counts
  kTpPp,    // model-parallel group (dense grad norm)
  // Expert side.
  kEp,
  kEtp,
  kEdp,     // expert gradient reduction
  kEtpEp,   // token dispatcher
  kEtpEpPp, // expert model-parallel group (expert grad norm)
  // First and last stage of each PP group (just the rank itself when PP=1).
  kEmbedding,
};
inline constexpr int kNumGroupKinds = static_cast<int>(GroupKind::kEmbedding) + 1;

// Short names as in ParallelContext ("tp", "dp_cp", "etp_ep", ...).
const char* group_kind_name(GroupKind kind);
std::array<GroupKind, kNumGroupKinds> all_group_kinds();

using RankGroup = std::vector<int>;  // global ranks; a member's position is its rank in the group

struct RankLayout {
  int world_size = 1;
  std::string order;  // the normalised order string (missing size-1 axes appended)
  std::vector<RankCoordinates> coordinates;  // (world_size)

  // groups[kind][g]: the members of group g of that kind.
  std::array<std::vector<RankGroup>, kNumGroupKinds> groups;
  // group_index[rank][kind]: which group of that kind holds the rank; -1 for none (only
  // kEmbedding on middle pipeline stages).
  std::vector<std::array<int, kNumGroupKinds>> group_index;

  const std::vector<RankGroup>& groups_of(GroupKind kind) const {
    return groups[static_cast<int>(kind)];
  }
  // The group of `kind` holding `rank`; nullptr when there is none.
  const RankGroup* group_of(GroupKind kind, int rank) const;
};

// Checks sizes, order string and divisibility; the messages name the offending setting.
absl::Status validate_parallel_config(const ParallelConfig& config, int world_size);

// Builds the full layout for `world_size` ranks (validates first).
absl::StatusOr<RankLayout> build_rank_layout(const ParallelConfig& config, int world_size);

// Model-dependent divisibility (plain ints so that parallel/ never sees model types). A
// num_experts of 0 means a dense model.
absl::Status validate_model_divisibility(const ParallelConfig& config, int num_layers,
                                         int num_heads, int num_query_groups, int num_experts,
                                         int padded_vocab);

// Megatron-Core's generate_masked_orthogonal_rank_groups: axes of `sizes` (first fastest); the
// groups span the masked axes and are indexed by the unmasked ones, both first-fastest.
std::vector<RankGroup> masked_orthogonal_groups(const std::vector<int>& sizes,
                                                const std::vector<bool>& mask);

}  // namespace moefold
