#include "tensor/attention_path_tuner.h"

#include <bit>
#include <string_view>

#include "absl/strings/str_format.h"

namespace moefold {
namespace {

int64_t bucket(int64_t length) {
  return length <= 1 ? length : static_cast<int64_t>(std::bit_ceil(static_cast<uint64_t>(length)));
}

const char* path_name(AttentionPath path) {
  return path == AttentionPath::kFlash ? "flash" : "chunked";
}

std::string describe(const AttentionShapeClass& shape) {
  return absl::StrFormat("attention %s d%d %d/%d heads batch %d q≤%d k≤%d%s",
                         shape.backward ? "backward" : "forward", shape.head_dim, shape.heads,
                         shape.kv_heads, shape.batch, shape.query_bucket, shape.key_bucket,
                         shape.float32_dkv ? " (float32 dK/dV)" : "");
}

}  // namespace

FlashAttentionMode flash_attention_mode(const char* environment_value) {
  if (environment_value == nullptr) return FlashAttentionMode::kTimed;
  const std::string_view value(environment_value);
  if (value == "0") return FlashAttentionMode::kNever;
  if (value == "1") return FlashAttentionMode::kAlways;
  return FlashAttentionMode::kTimed;
}

AttentionShapeClass attention_shape_class(bool backward, const AttentionDims& dims,
                                          bool float32_dkv) {
  AttentionShapeClass shape;
  shape.backward = backward;
  shape.float32_dkv = backward && float32_dkv;
  shape.head_dim = dims.d;
  shape.heads = dims.nh;
  shape.kv_heads = dims.nkv;
  shape.batch = dims.B;
  shape.query_bucket = bucket(dims.Sq);
  shape.key_bucket = bucket(dims.Skv);
  return shape;
}

std::optional<AttentionPath> AttentionPathTuner::decided(const AttentionShapeClass& shape) const {
  const auto it = decisions_.find(shape);
  if (it == decisions_.end()) return std::nullopt;
  return it->second;
}

AttentionPath AttentionPathTuner::decide(const AttentionShapeClass& shape, double flash_seconds,
                                         double chunked_seconds) {
  const AttentionPath path =
      flash_seconds <= chunked_seconds ? AttentionPath::kFlash : AttentionPath::kChunked;
  decisions_[shape] = path;
  report_.push_back(absl::StrFormat("%s: flash %.3f ms, chunked %.3f ms: %s", describe(shape),
                                    flash_seconds * 1e3, chunked_seconds * 1e3, path_name(path)));
  return path;
}

AttentionPath AttentionPathTuner::decide_untimed(const AttentionShapeClass& shape,
                                                 const std::string& why) {
  decisions_[shape] = AttentionPath::kFlash;
  report_.push_back(absl::StrFormat("%s: not timed (%s): flash", describe(shape), why));
  return AttentionPath::kFlash;
}

}  // namespace moefold
