#include "model/lm_head.h"

#include <algorithm>
#include <span>

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

// Each chunk's GEMMs re-pack the whole (V,H) weight, so chunks must be tall enough for that to
// be cheap next to the multiply: about 128 MiB of logits, at least 256 rows. The same on every
// TP rank (it depends on the global V), so the chunks' collectives line up.
int64_t chunk_rows_for(int64_t vocab) {
  return std::clamp<int64_t>((int64_t{1} << 25) / vocab, 256, 4096);
}

// The loss mask of n rows as a span; empty when there is none (all ones).
std::span<const float> mask_of(const float* mask_N, int64_t n) {
  return mask_N ? std::span<const float>(mask_N, n) : std::span<const float>();
}

}  // namespace

LmHead::LmHead(const ModelConfig& config, const ParallelContext& ctx, Parameter* tied_embedding,
               ParameterRegistry& registry)
    : ctx_(ctx),
      region_{ctx.tp.get(), ctx.config.sequence_parallel},
      vocab_(config.padded_vocab_size()),
      hidden_(config.hidden_size),
      tied_(tied_embedding != nullptr) {
  weight_ = tied_ ? tied_embedding
                  : registry.add_weight(shard_layout("lm_head", {vocab_, hidden_}, ctx.coords),
                                        config.init_method_std);
}

void LmHead::forward_backward(const Tensor& h_nH, const int32_t* labels_N, const float* mask_N,
                              float grad_scale, Tensor* dh_nH, const Tensor& loss_sum) const {
  const int64_t n = h_nH.numel() / hidden_;
  const int64_t N = region_.sharded() ? n * region_.size() : n;
  const bool grad = grad_scale != 0.0f && dh_nH != nullptr;
  if (grad) MOEFOLD_CHECK(dh_nH->numel() == n * hidden_);
  if (!region_.active()) {
    ops::cross_entropy_forward_backward(
        h_nH, weight_->compute_value(), {labels_N, static_cast<size_t>(N)}, mask_of(mask_N, N),
        grad ? grad_scale : 0.0f, grad ? *dh_nH : Tensor(), grad ? weight_->grad : Tensor(),
        chunk_rows_for(vocab_), loss_sum);
    return;
  }
  Tensor h_full;
  region_.enter_forward(h_nH.view({n, hidden_}), N, h_full);
  Tensor dh_full = grad ? Tensor::empty({N, hidden_}, dh_nH->dtype()) : Tensor();
  vocab_parallel_forward_backward(h_full, labels_N, mask_N, grad ? grad_scale : 0.0f, dh_full,
                                  loss_sum);
  if (grad) {
    Tensor dh = dh_nH->view({n, hidden_}), scratch;
    region_.enter_backward(dh_full, dh, false, scratch);
  }
}

// Per chunk of rows: local logits (rows, V/TP); max over TP; then Σ exp(z − max) and the label's
// logit (0 on ranks that do not own it) summed over TP in one all-reduce; CE = log Σ + max −
// z[label]. The gradient (softmax − onehot)·mask·scale stays local to the shard. The sums are
// exchanged as float64 so the reduction order over TP does not show in the loss. Everything but
// the labels and the mask stays on the device: the host never waits here (with NCCL).
void LmHead::vocab_parallel_forward_backward(const Tensor& h_full, const int32_t* labels_N,
                                             const float* mask_N, float grad_scale,
                                             const Tensor& dh_full,
                                             const Tensor& loss_sum) const {
  Communicator& tp = *region_.tp;
  const int64_t N = h_full.dim(0);
  for (int64_t r = 0; r < N; ++r) {
    if (mask_N == nullptr || mask_N[r] != 0.0f) {
      MOEFOLD_CHECK(labels_N[r] >= 0 && labels_N[r] < vocab_,
                    "label " << labels_N[r] << " at " << r << " outside vocabulary of " << vocab_);
    }
  }
  const int64_t first = weight_->layout.local_offset[0], V_local = weight_->layout.local_shape[0];
  const int64_t chunk = std::min(chunk_rows_for(vocab_), N);
  const Device device = h_full.device();
  Tensor logits = Tensor::empty({chunk, V_local}, DType::kFloat32, device);  // float32 (MODEL.md)
  Tensor row_max = Tensor::empty({chunk}, DType::kFloat32, device);
  // Σ exp(z − max) per row, then the label logit per row (0 where another shard holds it).
  Tensor sums_words = ops::float64_zeros(2 * chunk, device);
  double* sums = ops::float64_data(sums_words);
  double* label_logit = sums + chunk;
  for (int64_t begin = 0; begin < N; begin += chunk) {
    const int64_t rows = std::min(chunk, N - begin);
    const std::span<const int32_t> labels(labels_N + begin, rows);
    const std::span<const float> mask = mask_of(mask_N ? mask_N + begin : nullptr, rows);
    const Tensor h = h_full.slice_rows(begin, begin + rows);
    const Tensor z = logits.slice_rows(0, rows);
    ops::linear_forward(h, weight_->compute_value(), z);
    ops::rows_max(z, row_max, rows);
    {
      TimedTpCollective timed;
      tp.all_reduce(row_max.data(), rows, CommDType::kFloat32, ReduceOp::kMax);
    }
    ops::zero(sums_words);
    // z becomes exp(z − max); the sums and the label logits.
    ops::exp_shifted_rows(z, row_max, labels, mask, sums, label_logit, first);
    {
      TimedTpCollective timed;
      tp.all_reduce(sums, 2 * chunk, CommDType::kFloat64, ReduceOp::kSum);
    }
    ops::vocab_parallel_loss(row_max, sums, label_logit, mask, rows, loss_sum);
    if (!dh_full.defined()) continue;
    ops::softmax_gradient_rows(z, sums, labels, mask, grad_scale, first);
    ops::linear_backward_dx(z, weight_->compute_value(), dh_full.slice_rows(begin, begin + rows),
                            false);
    ops::linear_backward_dw(z, h, weight_->grad);
  }
}

}  // namespace moefold
