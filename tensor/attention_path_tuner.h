// Which path a bf16 attention call takes on a GPU where both fit: the flash kernels or the
// chunked cuBLAS path. Neither wins everywhere (the flash backward holds one block per SM; the
// chunked path writes a score matrix per chunk), so by default the first call of each shape
// class times both on the device, as cuDNN's benchmark mode does, and later calls of that class
// take the faster. The choice may differ between ranks and runs, so bf16 attention on a GPU is
// not bitwise reproducible by default (nor is the flash backward, whose dQ sums by atomics);
// MOEFOLD_FLASH_ATTENTION=0 gives the deterministic chunked path. A shape class: direction,
// head dim, heads, kv heads, batch, the dK/dV dtype, and the query and key lengths rounded up to
// powers of two. The decisions are reported (report()), so a benchmark run says which path each
// attention took and what both cost.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tensor/attention_plan.h"

namespace moefold {

enum class AttentionPath { kFlash, kChunked };

// Where both fit: always flash, never flash, or the faster after timing both (the default;
// MOEFOLD_FLASH_ATTENTION=1 and =0 force the others).
enum class FlashAttentionMode { kAlways, kNever, kTimed };
// The mode MOEFOLD_FLASH_ATTENTION's value (null when unset) asks for.
FlashAttentionMode flash_attention_mode(const char* environment_value);

struct AttentionShapeClass {
  bool backward = false;
  bool float32_dkv = false;  // backward: dK and dV accumulate in float32 (ring attention)
  int64_t head_dim = 0, heads = 0, kv_heads = 0, batch = 0;
  int64_t query_bucket = 0, key_bucket = 0;  // lengths rounded up to powers of two
  auto operator<=>(const AttentionShapeClass&) const = default;
};

AttentionShapeClass attention_shape_class(bool backward, const AttentionDims& dims,
                                          bool float32_dkv);

class AttentionPathTuner {
 public:
  // The decision for `shape` so far, if any.
  std::optional<AttentionPath> decided(const AttentionShapeClass& shape) const;
  // Records the timings of both paths for `shape` and returns the faster (flash on a tie).
  AttentionPath decide(const AttentionShapeClass& shape, double flash_seconds,
                       double chunked_seconds);
  // Records flash for `shape` without timing (both paths' scratch did not fit: `why`).
  AttentionPath decide_untimed(const AttentionShapeClass& shape, const std::string& why);
  // One line per decision, in the order made: "attention backward d128 16/16 heads batch 1
  // q≤4096 k≤4096: flash 3.10 ms, chunked 4.20 ms: flash".
  std::vector<std::string> report() const { return report_; }

 private:
  std::map<AttentionShapeClass, AttentionPath> decisions_;
  std::vector<std::string> report_;
};

}  // namespace moefold
