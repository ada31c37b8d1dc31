// Sizes checked before anything is allocated: the recipe's size products are checked against
// overflow, and a lower bound of the bytes each rank will hold (weights, gradients, Adam state,
// one micro-batch's logits and layer inputs) against the memory this machine has, so an absurd
// vocabulary or sequence length is one clear line instead of std::bad_alloc mid-build.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "trainer/train_config.h"

namespace moefold {

struct MemoryPlan {
  double parameters_per_rank = 0;  // elements of this rank's share of the weights
  double bytes_per_rank = 0;       // the lower bound above
  std::string largest;             // the largest term, for the message ("the embedding ...")
};

// The plan for `recipe` (model.vocab_size already resolved) on a world of `world_size` ranks.
MemoryPlan plan_memory(const Recipe& recipe, int world_size);

// Fails when a size product overflows 64-bit element counts, or when the plan exceeds
// `available_bytes` (this rank's share of the machine's available memory; <= 0: unknown, not
// checked). The message names the recipe file and the largest term.
absl::Status check_memory_plan(const Recipe& recipe, int world_size, double available_bytes);

// MemAvailable from /proc/meminfo divided by the ranks on this machine (from the launcher's
// environment, OMPI_COMM_WORLD_LOCAL_SIZE), or 0 when unknown.
double available_bytes_per_rank();

}  // namespace moefold
