#include "trainer/peak_flops.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_format.h"
#include "tensor/backend.h"

namespace moefold {
namespace {

constexpr int kGemmSize = 512;
constexpr int kRepeats = 5;
constexpr double kSecondsPerRepeat = 0.06;

}  // namespace

PeakFlops resolve_peak_flops(double recipe_peak_flops, Device device, DType compute,
                             Communicator& world) {
  if (recipe_peak_flops > 0) return {recipe_peak_flops, "training.peak_flops"};
  Backend& backend = backend_for(device);
  if (const double known = backend.known_peak_flops(compute); known > 0) {
    return {known, absl::StrFormat("%s dense %s peak of %s", device_name(device),
                                   dtype_name(compute), backend.describe())};
  }
  // Measured with every rank running at once, as in training; the threads are already set.
  world.barrier();
  double best = 0;
  for (int i = 0; i < kRepeats; ++i) {
    best = std::max(best, backend.measure_gemm_flops(kGemmSize, kSecondsPerRepeat));
  }
  std::vector<double> rates(world.size());
  world.all_gather(&best, 1, rates.data(), CommDType::kFloat64);
  std::sort(rates.begin(), rates.end());
  const double median = rates.size() % 2 == 1
                            ? rates[rates.size() / 2]
                            : 0.5 * (rates[rates.size() / 2 - 1] + rates[rates.size() / 2]);
  return {median, absl::StrFormat("measured %d^3 sgemm, all %d ranks at once, median of each "
                                  "rank's best of %d",
                                  kGemmSize, world.size(), kRepeats)};
}

std::string implausible_mfu_warning(double mfu, const PeakFlops& peak) {
  if (mfu <= 1.0) return "";
  return absl::StrFormat(
      "moefold: warning: MFU %.1f%% is above 100%%: the peak (%.1f GFLOP/s per rank, %s) is "
      "too low; set training.peak_flops to the device's real peak",
      100.0 * mfu, peak.per_rank / 1e9, peak.source);
}

}  // namespace moefold
