// RMSNorm backward for a norm weight that met only part of the data on this rank: its gradient
// is summed over a group before it is added to norm.grad. The residual norms under sequence
// parallelism (each TP rank saw its token shard) and the q/k norms under TP (each rank saw its
// heads) need this.
#pragma once

#include "model/parameter.h"
#include "parallel/communicator.h"
#include "tensor/tensor.h"

namespace moefold {

// dx (N,w) = rmsnorm'(dy, x) (overwritten, or accumulated); norm.grad += the gradient of the
// weight, summed over `group` when it is given (nullptr = this rank's alone). scratch holds the
// partial sum.
void rmsnorm_backward_summed(Communicator* group, const Tensor& dy, const Tensor& x,
                             const Parameter& norm, const Tensor& rstd, const Tensor& dx,
                             Tensor& scratch, bool accumulate_dx);

}  // namespace moefold
