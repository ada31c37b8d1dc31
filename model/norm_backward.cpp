#include "model/norm_backward.h"

#include "model/scratch.h"
#include "parallel/tp_communication.h"
#include "tensor/ops.h"

namespace moefold {

void rmsnorm_backward_summed(Communicator* group, const Tensor& dy, const Tensor& x,
                             const Parameter& norm, const Tensor& rstd, const Tensor& dx,
                             Tensor& scratch, bool accumulate_dx) {
  if (group == nullptr || group->size() == 1) {
    ops::rmsnorm_backward(dy, x, norm.compute_value(), rstd, dx, norm.grad, accumulate_dx);
    return;
  }
  const int64_t width = norm.value.numel();
  ensure_shape(scratch, {width}).zero();
  ops::rmsnorm_backward(dy, x, norm.compute_value(), rstd, dx, scratch, accumulate_dx);
  copy_to_tp_region_backward(*group, scratch.data(), width);
  ops::add(norm.grad, scratch);
}

}  // namespace moefold
