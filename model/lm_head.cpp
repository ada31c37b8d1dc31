#include "model/lm_head.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "model/sharding_plan.h"
#include "tensor/check.h"
#include "tensor/cpu/cross_entropy.h"
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/vec_math.h"

namespace moefold {
namespace {

// Each chunk's GEMMs re-pack the whole (V,H) weight, so chunks must be tall enough for that to
// be cheap next to the multiply: about 128 MiB of logits, at least 256 rows. The same on every
// TP rank (it depends on the global V), so the chunks' collectives line up.
int64_t chunk_rows_for(int64_t vocab) {
  return std::clamp<int64_t>((int64_t{1} << 25) / vocab, 256, 4096);
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

double LmHead::forward_backward(const Tensor& h_nH, const int32_t* labels_N, const float* mask_N,
                                float grad_scale, Tensor* dh_nH) const {
  const int64_t n = h_nH.numel() / hidden_;
  const int64_t N = region_.sharded() ? n * region_.size() : n;
  const bool grad = grad_scale != 0.0f && dh_nH != nullptr;
  if (grad) MOEFOLD_CHECK(dh_nH->numel() == n * hidden_);
  if (!region_.active()) {
    double loss_sum = 0.0;
    cpu::cross_entropy_forward_backward(
        h_nH.data(), weight_->value.data(), labels_N, mask_N, grad ? grad_scale : 0.0f, &loss_sum,
        grad ? dh_nH->data() : nullptr, grad ? weight_->grad.data() : nullptr, N, hidden_, vocab_,
        chunk_rows_for(vocab_));
    return loss_sum;
  }
  Tensor h_full;
  region_.enter_forward(h_nH.view({n, hidden_}), N, h_full);
  Tensor dh_full = grad ? Tensor::empty({N, hidden_}) : Tensor();
  const double loss_sum = vocab_parallel_forward_backward(
      h_full, labels_N, mask_N, grad ? grad_scale : 0.0f, grad ? dh_full.data() : nullptr);
  if (grad) {
    Tensor dh = dh_nH->view({n, hidden_}), scratch;
    region_.enter_backward(dh_full, dh, false, scratch);
  }
  return loss_sum;
}

// Per chunk of rows: local logits (rows, V/TP); max over TP; then Σ exp(z − max) and the label's
// logit (0 on ranks that do not own it) summed over TP in one all-reduce; CE = log Σ + max −
// z[label]. The gradient (softmax − onehot)·mask·scale stays local to the shard. The sums are
// exchanged as float64 so the reduction order over TP does not show in the loss.
double LmHead::vocab_parallel_forward_backward(const Tensor& h_full, const int32_t* labels_N,
                                               const float* mask_N, float grad_scale,
                                               float* dh_full) const {
  Communicator& tp = *region_.tp;
  const int64_t N = h_full.dim(0), H = hidden_;
  const int64_t first = weight_->layout.local_offset[0], V_local = weight_->layout.local_shape[0];
  const int64_t chunk = std::min(chunk_rows_for(vocab_), N);
  Tensor logits = Tensor::empty({chunk, V_local});
  std::vector<float> row_max(chunk);
  std::vector<double> sums(2 * chunk);  // Σ exp(z − max) per row, then the label logit per row
  double loss_sum = 0.0;
  for (int64_t begin = 0; begin < N; begin += chunk) {
    const int64_t rows = std::min(chunk, N - begin);
    const float* h = h_full.data() + begin * H;
    float* z = logits.data();
    cpu::linear_forward(h, weight_->value.data(), z, rows, H, V_local);
    for (int64_t r = 0; r < rows; ++r) row_max[r] = cpu::max_value(z + r * V_local, V_local);
    {
      TimedTpCollective timed;
      tp.all_reduce(row_max.data(), rows, CommDType::kFloat32, ReduceOp::kMax);
    }
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = begin + r;
      float* zr = z + r * V_local;
      if (mask_N == nullptr || mask_N[t] != 0.0f) {
        const int64_t label = labels_N[t];
        MOEFOLD_CHECK(label >= 0 && label < vocab_,
                      "label " << label << " at " << t << " outside vocabulary of " << vocab_);
        if (label >= first && label < first + V_local) sums[chunk + r] = zr[label - first];
      }
      sums[r] = cpu::exp_shifted_sum(zr, row_max[r], zr, V_local);  // z becomes exp(z − max)
    }
    {
      TimedTpCollective timed;
      tp.all_reduce(sums.data(), 2 * chunk, CommDType::kFloat64, ReduceOp::kSum);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = begin + r;
      const float mask = mask_N ? mask_N[t] : 1.0f;
      if (mask == 0.0f) continue;
      const double lse = std::log(sums[r]) + row_max[r];
      loss_sum += (lse - sums[chunk + r]) * mask;
    }
    if (dh_full == nullptr) continue;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = begin + r;
      const float mask = mask_N ? mask_N[t] : 1.0f;
      float* zr = z + r * V_local;
      const float scale = mask * grad_scale;
      cpu::scale_in_place(zr, mask == 0.0f ? 0.0f : static_cast<float>(scale / sums[r]), V_local);
      if (mask == 0.0f) continue;
      const int64_t label = labels_N[t];
      if (label >= first && label < first + V_local) zr[label - first] -= scale;
    }
    cpu::linear_backward_dx(z, weight_->value.data(), dh_full + begin * H, rows, H, V_local,
                            false);
    cpu::linear_backward_dw(z, h, weight_->grad.data(), rows, H, V_local);
  }
  return loss_sum;
}

}  // namespace moefold
