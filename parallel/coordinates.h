// One rank's coordinates on both sides of MoE Parallel Folding: the attention side
// (TP x CP x DP x PP) and the expert side (ETP x EP x EDP x PP) over the same ranks.
#pragma once

namespace moefold {

struct RankCoordinates {
  int world_rank = 0;
  int world_size = 1;
  // Attention side.
  int tp_rank = 0;
  int tp_size = 1;
  int cp_rank = 0;
  int cp_size = 1;
  int dp_rank = 0;
  int dp_size = 1;
  int pp_rank = 0;  // the pipeline stage; identical on both sides
  int pp_size = 1;
  // Expert side.
  int etp_rank = 0;
  int etp_size = 1;
  int ep_rank = 0;
  int ep_size = 1;
  int edp_rank = 0;
  int edp_size = 1;

  bool operator==(const RankCoordinates&) const = default;
};

}  // namespace moefold
