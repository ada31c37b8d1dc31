// The peak that MFU is measured against (issue: "MFU that means what users think"), one of:
// the recipe's training.peak_flops; the device's published dense peak for the compute dtype;
// on a CPU, the GEMM rate measured once at start-up by all ranks together (each rank's best of
// several runs with its own threads; the median over ranks), because ranks share the cores.
#pragma once

#include <string>

#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

struct PeakFlops {
  double per_rank = 0;  // FLOP/s
  std::string source;   // for the start-up line: "training.peak_flops", "measured sgemm ..."
};

// Collective over `world` when it measures.
PeakFlops resolve_peak_flops(double recipe_peak_flops, Device device, DType compute,
                             Communicator& world);

// The warning line for an MFU above 100% (the peak is then wrong), or "" when it is plausible.
std::string implausible_mfu_warning(double mfu, const PeakFlops& peak);

}  // namespace moefold
