// Stash buffers are allocated on first use and reused by later micro-batches of the same shape.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace moefold {

// Makes `t` a float32 tensor of `shape` on `device`, reusing its storage when the shape and
// device are unchanged. The contents are unspecified.
inline Tensor& ensure_shape(Tensor& t, const std::vector<int64_t>& shape,
                            Device device = default_device()) {
  if (!t.defined() || t.shape() != shape || t.device() != device) {
    t = Tensor::empty(shape, DType::kFloat32, device);
  }
  return t;
}

// The same for an integer buffer.
template <typename T>
inline T* ensure_size(std::vector<T>& v, int64_t n) {
  v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace moefold
