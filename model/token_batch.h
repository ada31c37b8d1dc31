// The model's input for one micro-batch of one rank: what the layers read, whoever produced it
// (the trainer moves data/'s micro-batches into this, so model/ does not depend on data/).
#pragma once

#include <cstdint>
#include <vector>

namespace moefold {

struct TokenBatch {
  int batch = 0;                  // B: sequences
  int seq = 0;                    // S: tokens per sequence
  std::vector<int32_t> tokens;    // (B,S) row-major
  std::vector<int32_t> labels;    // (B,S) row-major: the next token of each position
  std::vector<float> loss_mask;   // (B,S) row-major: 1, or 0 where a label takes no loss
};

}  // namespace moefold
