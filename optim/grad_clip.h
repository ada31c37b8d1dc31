// Gradient norm and clipping (MODEL.md): n = sqrt(Σ g²) over every parameter element of the model,
// each counted exactly once; when n > clip_grad every gradient is scaled by clip_grad / (n + 1e-6).
#pragma once

#include <vector>

#include "optim/adamw.h"
#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

// sqrt(Σ g²) over the gradients each rank counts (`counted`: every element of the model exactly
// once over the ranks of `world`), summed over `world`. Collective.
double global_grad_norm(const std::vector<Tensor>& counted, Communicator& world);

// Σ g² over the given gradients, accumulated in double. Parallel callers pass only the elements
// this rank owns and sum the result over the right groups before taking the root.
double grad_square_sum(const std::vector<OptimTensor>& tensors);

// Scales every gradient by clip_grad / (norm + 1e-6) when norm > clip_grad > 0; returns the scale.
double clip_gradients(const std::vector<OptimTensor>& tensors, double norm, double clip_grad);

}  // namespace moefold
