// One micro-batch of B sequences of S tokens, as the data iterator hands it to the model.
// Token t = b·S + s. labels are the next tokens; loss_mask is 1 where the label counts.
#pragma once

#include <cstdint>
#include <vector>

namespace moefold {

struct MicroBatch {
  int batch, seq;
  std::vector<int32_t> tokens, labels;  // (B,S)
  std::vector<float> loss_mask;         // (B,S) in {0,1}
};

}  // namespace moefold
