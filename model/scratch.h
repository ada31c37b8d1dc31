// Stash buffers are allocated on first use and reused by later micro-batches of the same shape.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace moefold {

// Makes `t` a tensor of `shape` and `dtype` on `device`, reusing its storage when nothing
// changed. The contents are unspecified. Activations take their input's dtype (bf16 under
// mixed precision); statistics, router and loss buffers stay float32 (MODEL.md).
inline Tensor& ensure_shape(Tensor& t, const std::vector<int64_t>& shape,
                            DType dtype = DType::kFloat32, Device device = default_device()) {
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype || t.device() != device) {
    t = Tensor::empty(shape, dtype, device);
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
