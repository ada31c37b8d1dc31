// The operand handling shared by tensor/ops.cpp and tensor/ops_layers.cpp (not for layers:
// they include tensor/ops.h).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "tensor/backend.h"
#include "tensor/check.h"
#include "tensor/tensor.h"

namespace moefold::ops::internal {

// An op's operands as float32 pointers on one backend. MODEL.md "Mixed precision": bf16 tensors
// are storage only, and every op computes in float32. A bf16 operand is widened exactly into a
// float32 temporary on its device; finish() rounds the ones the op wrote back to bf16, nearest
// even. Operands the op keeps float32 (statistics, router, logits, optimizer state) are checked.
class Operands {
 public:
  Operands(const char* op, const Tensor& first) : op_(op), device_(first.device()) {
    check(first);
    backend_ = &backend_for(device_);
    backend_->begin_op();
  }
  ~Operands() { backend_->end_op(); }
  Operands(const Operands&) = delete;
  Operands& operator=(const Operands&) = delete;

  Backend& backend() const { return *backend_; }
  const float* in(const Tensor& t) { return get(t, false); }
  float* out(const Tensor& t) { return get(t, true); }
  float* optional_out(const Tensor& t) { return t.defined() ? out(t) : nullptr; }
  // GEMM operands go to the backend in their storage type (Backend's *_mixed GEMMs).
  GemmInput gemm_in(const Tensor& t) const {
    check(t);
    return {t.raw_data(), t.dtype()};
  }
  GemmOutput gemm_out(const Tensor& t) const {
    check(t);
    return {t.raw_data(), t.dtype()};
  }
  // True when every operand of `tensors` has `dtype` (an op with a native bf16 entry point
  // uses it when its operands have exactly that entry point's dtypes).
  bool all_of(DType dtype, std::initializer_list<const Tensor*> tensors) const {
    for (const Tensor* t : tensors) {
      check(*t);
      if (t->dtype() != dtype) return false;
    }
    return true;
  }
  bool all_bf16(std::initializer_list<const Tensor*> tensors) const {
    return all_of(DType::kBFloat16, tensors);
  }
  static uint16_t* bits(const Tensor& t) { return static_cast<uint16_t*>(t.raw_data()); }
  // Operands MODEL.md keeps in float32; a bf16 one is an error naming the op.
  float* f32(const Tensor& t) {
    check(t);
    MOEFOLD_CHECK(t.dtype() == DType::kFloat32,
                  "ops::" << op_ << ": operand " << t.shape_string()
                          << " is bfloat16, but this op has no bf16 path (MODEL.md keeps it "
                             "float32)");
    return t.data();
  }
  void finish() {
    for (const auto& [wide, narrow] : written_) {
      backend_->round_to_bf16(wide.data(), static_cast<uint16_t*>(narrow.raw_data()),
                              narrow.numel());
    }
    written_.clear();
  }

 private:
  void check(const Tensor& t) const {
    MOEFOLD_CHECK(t.defined(), "ops::" << op_ << ": undefined operand");
    MOEFOLD_CHECK(t.device() == device_, "ops::" << op_ << ": operands on different devices ("
                                                 << device_name(t.device()) << " and "
                                                 << device_name(device_) << ")");
  }
  float* get(const Tensor& t, bool written) {
    check(t);
    if (t.dtype() == DType::kFloat32) return t.data();
    Tensor wide = Tensor::empty({t.numel()}, DType::kFloat32, device_);
    backend_->widen_bf16(static_cast<const uint16_t*>(t.raw_data()), wide.data(), t.numel());
    if (written) written_.emplace_back(wide, t);
    temporaries_.push_back(wide);
    return wide.data();
  }

  const char* op_;
  Device device_;
  Backend* backend_;
  std::vector<Tensor> temporaries_;
  std::vector<std::pair<Tensor, Tensor>> written_;  // (float32 result, bf16 destination)
};

// Rows of a 2-D view of t with `cols` columns (checked to divide).
inline int64_t rows_of(const Tensor& t, int64_t cols) {
  MOEFOLD_CHECK(cols > 0 && t.numel() % cols == 0,
                t.shape_string() << " is not a whole number of rows of " << cols);
  return t.numel() / cols;
}

inline void expect_numel(const Tensor& t, int64_t n, const char* what) {
  MOEFOLD_CHECK(t.numel() == n, what << " " << t.shape_string() << " should hold " << n);
}

}  // namespace moefold::ops::internal
