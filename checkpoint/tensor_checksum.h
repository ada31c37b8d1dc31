// Checksums of checkpoint tensors that do not depend on how the tensor was sharded: the checksum
// of a float32 tensor is
//     Σ over its elements of XXH3_64(the element's 4 bytes, seed = its row-major global index)
// modulo 2^64. A sum is the same in any order, so each rank adds up the box it writes (or reads)
// and the per-rank partial sums add up to the whole tensor's value under any layout; the seed
// makes moving a value to another position change the sum. One flipped byte changes it with
// probability 1 - 2^-64.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moefold {

// The partial checksum of the box [offset, offset + shape) of a tensor of `global_shape`, whose
// elements are held contiguously (row-major over `shape`) at `data`.
uint64_t box_checksum(const std::vector<int64_t>& global_shape,
                      const std::vector<int64_t>& offset, const std::vector<int64_t>& shape,
                      const float* data);

// "xxh3sum:0123456789abcdef", as stored in meta.json; parse_checksum reads it back.
std::string format_checksum(uint64_t checksum);
std::optional<uint64_t> parse_checksum(const std::string& text);

}  // namespace moefold
