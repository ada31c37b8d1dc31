// Multi-tensor apply: one GPU launch updates many tensors (the optimizer's hundreds of parameter
// tensors) by cutting their elements into chunks, one block per chunk. The chunk table is built
// on the host, and the CPU tests check it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace moefold {

// Elements [begin, end) of tensor `tensor`.
struct TensorChunk {
  int64_t tensor;
  int64_t begin, end;
};

// The elements of tensors of `sizes` in chunks of at most `chunk_elements`, tensor after
// tensor: every element in exactly one chunk; empty tensors have none.
inline std::vector<TensorChunk> tensor_chunks(std::span<const int64_t> sizes,
                                              int64_t chunk_elements) {
  std::vector<TensorChunk> chunks;
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t begin = 0; begin < sizes[t]; begin += chunk_elements) {
      const int64_t end = std::min(sizes[t], begin + chunk_elements);
      chunks.push_back({static_cast<int64_t>(t), begin, end});
    }
  }
  return chunks;
}

}  // namespace moefold
