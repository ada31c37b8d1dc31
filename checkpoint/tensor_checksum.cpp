#include "checkpoint/tensor_checksum.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace moefold {
namespace {

constexpr const char* kPrefix = "xxh3sum:";

}  // namespace

uint64_t box_checksum(const std::vector<int64_t>& global_shape,
                      const std::vector<int64_t>& offset, const std::vector<int64_t>& shape,
                      const float* data) {
  const size_t ndim = global_shape.size();
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel == 0) return 0;
  if (ndim == 0) return XXH3_64bits_withSeed(data, sizeof(float), 0);
  const int64_t row = shape[ndim - 1];  // contiguous in both the box and the global tensor
  std::vector<int64_t> index(ndim, 0);  // position in the box, last axis always 0
  uint64_t sum = 0;
  for (int64_t done = 0; done < numel; done += row) {
    int64_t global = 0;
    for (size_t a = 0; a < ndim; ++a) global = global * global_shape[a] + offset[a] + index[a];
    for (int64_t j = 0; j < row; ++j) {
      sum += XXH3_64bits_withSeed(data + done + j, sizeof(float), static_cast<uint64_t>(global + j));
    }
    for (int a = static_cast<int>(ndim) - 2; a >= 0; --a) {
      if (++index[a] < shape[a]) break;
      index[a] = 0;
    }
  }
  return sum;
}

std::string format_checksum(uint64_t checksum) {
  return absl::StrFormat("%s%016x", kPrefix, checksum);
}

std::optional<uint64_t> parse_checksum(const std::string& text) {
  uint64_t value = 0;
  if (!absl::StartsWith(text, kPrefix) || text.size() != std::strlen(kPrefix) + 16 ||
      !absl::SimpleHexAtoi(text.substr(std::strlen(kPrefix)), &value)) {
    return std::nullopt;
  }
  return value;
}

}  // namespace moefold
