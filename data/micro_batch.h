// One micro-batch of training data for one rank.
#pragma once

#include <cstdint>
#include <vector>

namespace moefold {

struct MicroBatch {
  int batch = 0;                  // B: samples in this micro-batch
  int seq = 0;                    // S: tokens per sample
  std::vector<int32_t> tokens;    // (B,S) row-major: sample[:-1]
  std::vector<int32_t> labels;    // (B,S) row-major: sample[1:]
  std::vector<float> loss_mask;   // (B,S) row-major: 1, or 0 on end-of-document labels
                                  // when eod_mask_loss
};

}  // namespace moefold
