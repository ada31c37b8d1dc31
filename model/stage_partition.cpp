#include "model/stage_partition.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensor/check.h"

namespace moefold {
namespace {

constexpr const char* kFirst = "parallel.decoder_first_pipeline_num_layers";
constexpr const char* kLast = "parallel.decoder_last_pipeline_num_layers";
constexpr const char* kPipeline = "parallel.pipeline_model_parallel_size";
constexpr const char* kVirtual = "parallel.virtual_pipeline_model_parallel_size";

absl::Status invalid(const std::string& message) {
  return absl::InvalidArgumentError(message);
}

// Checks one of the uneven-split settings on its own.
absl::Status check_end_stage(const char* key, int layers, int num_layers, int pp, int chunks) {
  if (layers < 0) return invalid(absl::StrCat(key, " ", layers, " is negative"));
  if (layers == 0) return absl::OkStatus();
  if (pp == 1) return invalid(absl::StrCat(key, " ", layers, " needs ", kPipeline, " > 1"));
  if (layers > num_layers) {
    return invalid(absl::StrCat(key, " ", layers, " is more than model.num_layers ", num_layers));
  }
  if (layers % chunks != 0) {
    return invalid(
        absl::StrCat(key, " ", layers, " is not divisible by ", kVirtual, " ", chunks));
  }
  return absl::OkStatus();
}

// The layers the middle stages share (every stage's for an even split), for errors.
std::string middle_layers_description(int num_layers, int first, int last) {
  if (first == 0 && last == 0) return absl::StrCat("model.num_layers ", num_layers);
  std::string out = absl::StrCat("the ", num_layers - first - last,
                                 " layers left by model.num_layers ", num_layers);
  if (first > 0) absl::StrAppend(&out, " - ", kFirst, " ", first);
  if (last > 0) absl::StrAppend(&out, " - ", kLast, " ", last);
  return out;
}

}  // namespace

StagePartition::StagePartition(int pp_size, int chunks, std::vector<LayerRange> ranges)
    : pp_size_(pp_size), chunks_(chunks), ranges_(std::move(ranges)) {
  MOEFOLD_CHECK(pp_size_ >= 1 && chunks_ >= 1, "pp_size " << pp_size_ << " chunks " << chunks_);
  MOEFOLD_CHECK(ranges_.size() == static_cast<size_t>(pp_size_) * chunks_,
                ranges_.size() << " ranges for " << pp_size_ << " x " << chunks_);
  int next = 0;
  for (const LayerRange& r : ranges_) {
    MOEFOLD_CHECK(r.begin == next && r.end >= r.begin, "ranges must be consecutive from 0");
    next = r.end;
  }
}

LayerRange StagePartition::layers(int stage, int chunk) const {
  MOEFOLD_CHECK(stage >= 0 && stage < pp_size_ && chunk >= 0 && chunk < chunks_,
                "stage " << stage << " chunk " << chunk);
  return ranges_[static_cast<size_t>(chunk) * pp_size_ + stage];
}

int StagePartition::num_layers_on_stage(int stage) const {
  int total = 0;
  for (int chunk = 0; chunk < chunks_; ++chunk) total += layers(stage, chunk).size();
  return total;
}

int StagePartition::virtual_stage_of_layer(int layer) const {
  MOEFOLD_CHECK(layer >= 0 && layer < num_layers(), "layer " << layer);
  const auto it = std::upper_bound(ranges_.begin(), ranges_.end(), layer,
                                   [](int l, const LayerRange& r) { return l < r.end; });
  return static_cast<int>(it - ranges_.begin());
}

int StagePartition::stage_of_layer(int layer) const {
  return virtual_stage_of_layer(layer) % pp_size_;
}

int StagePartition::chunk_of_layer(int layer) const {
  return virtual_stage_of_layer(layer) / pp_size_;
}

absl::StatusOr<StagePartition> partition_layers(int num_layers, const ParallelConfig& config) {
  const int pp = config.pipeline_model_parallel_size;
  const int vpp = config.virtual_pipeline_model_parallel_size;
  const int first = config.decoder_first_pipeline_num_layers;
  const int last = config.decoder_last_pipeline_num_layers;
  if (pp < 1) return invalid(absl::StrCat(kPipeline, " ", pp, " is below 1"));
  if (vpp < 0) return invalid(absl::StrCat(kVirtual, " ", vpp, " is negative"));
  if (num_layers < 1) return invalid(absl::StrCat("model.num_layers ", num_layers, " is below 1"));
  const int chunks = std::max(1, vpp);
  for (const auto& [key, layers] : {std::pair{kFirst, first}, std::pair{kLast, last}}) {
    if (absl::Status s = check_end_stage(key, layers, num_layers, pp, chunks); !s.ok()) return s;
  }
  if (first + last > num_layers) {
    return invalid(absl::StrCat(kFirst, " ", first, " + ", kLast, " ", last, " = ", first + last,
                                " is more than model.num_layers ", num_layers));
  }

  // Stages without their own setting share the remaining layers evenly, chunk by chunk.
  const int middle_stages = pp - (first > 0 ? 1 : 0) - (last > 0 ? 1 : 0);
  const int middle_layers = num_layers - first - last;
  int per_middle_chunk = 0;
  if (middle_stages == 0 && middle_layers > 0) {
    return invalid(absl::StrCat(middle_layers_description(num_layers, first, last),
                                " have no stage: ", kPipeline, " ", pp,
                                " leaves no middle stage"));
  }
  if (middle_stages > 0) {
    const int pieces = middle_stages * chunks;
    std::string over = middle_stages == pp ? absl::StrCat(kPipeline, " ", pp)
                                           : absl::StrCat(middle_stages, " middle stage(s)");
    if (chunks > 1) absl::StrAppend(&over, " x ", kVirtual, " ", chunks);
    const std::string what = middle_layers_description(num_layers, first, last);
    if (middle_layers < pieces) {
      return invalid(absl::StrCat(what, " is fewer than the ", pieces, " pieces of ", over,
                                  " (each needs a layer)"));
    }
    if (middle_layers % pieces != 0) {
      return invalid(absl::StrCat(what, " cannot be split evenly over ", over));
    }
    per_middle_chunk = middle_layers / pieces;
  }

  std::vector<LayerRange> ranges;
  ranges.reserve(static_cast<size_t>(pp) * chunks);
  int next = 0;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    for (int stage = 0; stage < pp; ++stage) {
      int size = per_middle_chunk;
      if (stage == 0 && first > 0) size = first / chunks;
      if (stage == pp - 1 && last > 0) size = last / chunks;
      ranges.push_back({next, next + size});
      next += size;
    }
  }
  return StagePartition(pp, chunks, std::move(ranges));
}

}  // namespace moefold
