// The Adam state a rank holds, as checkpoints save and load it in place (checkpoint/checkpoint.h):
// runs of each parameter's local tensor, so no rank ever holds more than its own share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moefold {

// The Adam state of one parameter that this rank holds: runs of consecutive elements of the
// parameter's local tensor (row-major). A plain AdamW holds one run, the whole tensor; the
// distributed optimizer holds its ZeRO shard, the segments it owns.
struct OptimizerStateRun {
  int64_t begin = 0;            // first element of the local tensor covered
  int64_t numel = 0;
  float* exp_avg = nullptr;     // (numel)
  float* exp_avg_sq = nullptr;  // (numel)
};

struct OptimizerStateTensor {
  std::string name;  // the parameter's checkpoint name
  std::vector<OptimizerStateRun> runs;
  // World ranks that hold the same local box and split its elements between them (each holds
  // its runs); {this rank} for whole tensors. A save writes each element once.
  std::vector<int> shard_group;
};

// What save_checkpoint writes to optim.h5 and load_checkpoint fills in place: no rank ever
// holds more than its own runs, so checkpoint memory shrinks with the distributed optimizer.
struct OptimizerCheckpointState {
  int64_t steps = 0;                          // Adam's step count
  std::vector<OptimizerStateTensor> tensors;  // one per parameter of the registry
};

}  // namespace moefold
