#include "tensor/ops.h"

#include <utility>
#include <vector>

#include "tensor/ops_operands.h"

namespace moefold::ops {

using internal::expect_numel;
using internal::Operands;
using internal::rows_of;

void zero(const Tensor& t) { backend_for(t.device()).zero(t.raw_data(), t.nbytes()); }

void fill(const Tensor& t, float value) {
  Operands a("fill", t);
  a.backend().fill(a.out(t), value, t.numel());
  a.finish();
}

void cast(const Tensor& dst, const Tensor& src) {
  MOEFOLD_CHECK(dst.numel() == src.numel() && dst.device() == src.device(),
                "cast of " << src.shape_string() << " into " << dst.shape_string());
  Backend& backend = backend_for(dst.device());
  if (dst.dtype() == src.dtype()) {
    backend.copy(dst.raw_data(), src.raw_data(), dst.nbytes());
  } else if (dst.dtype() == DType::kBFloat16) {
    backend.round_to_bf16(src.data(), static_cast<uint16_t*>(dst.raw_data()), dst.numel());
  } else {
    backend.widen_bf16(static_cast<const uint16_t*>(src.raw_data()), dst.data(), dst.numel());
  }
}

void copy(const Tensor& dst, const Tensor& src) {
  MOEFOLD_CHECK(dst.numel() == src.numel() && dst.dtype() == src.dtype(),
                "copy of " << src.shape_string() << " into " << dst.shape_string());
  if (src.device() == dst.device()) {
    backend_for(dst.device()).copy(dst.raw_data(), src.raw_data(), dst.nbytes());
  } else if (dst.device() == Device::kCpu) {
    backend_for(src.device()).copy_to_host(dst.raw_data(), src.raw_data(), dst.nbytes());
  } else {
    MOEFOLD_CHECK(src.device() == Device::kCpu, "copies between two devices go through the host");
    backend_for(dst.device()).copy_from_host(dst.raw_data(), src.raw_data(), dst.nbytes());
  }
}

void copy_memory(void* dst, const void* src, size_t bytes) {
  const Device to = device_of_pointer(dst), from = device_of_pointer(src);
  if (to == from) {
    backend_for(to).copy(dst, src, bytes);
  } else if (to == Device::kCpu) {
    backend_for(from).copy_to_host(dst, src, bytes);
  } else {
    MOEFOLD_CHECK(from == Device::kCpu, "copies between two devices go through the host");
    backend_for(to).copy_from_host(dst, src, bytes);
  }
}

void add_memory(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  const Device device = device_of_pointer(y);
  MOEFOLD_CHECK(device_of_pointer(x) == device, "add_memory: operands on different devices ("
                                                    << device_name(device_of_pointer(x)) << " and "
                                                    << device_name(device) << ")");
  Backend& backend = backend_for(device);
  backend.begin_op();
  backend.add(y, x, n);
  backend.end_op();
}

void copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t rows,
               int64_t cols, size_t element_bytes) {
  const Device device = device_of_pointer(dst);
  MOEFOLD_CHECK(device_of_pointer(src) == device, "copy_rows between devices");
  backend_for(device).copy_rows(dst, dst_stride, src, src_stride, rows, cols, element_bytes);
}

Tensor to_host(const Tensor& t) { return to_device(t, Device::kCpu); }

HostCopy start_to_host(const Tensor& t) {
  if (t.device() == Device::kCpu) return HostCopy(t, nullptr);
  Tensor host = Tensor::empty(t.shape(), t.dtype(), Device::kCpu);
  auto pending = backend_for(t.device()).start_copy_to_host(host.raw_data(), t.raw_data(),
                                                            host.nbytes());
  return HostCopy(std::move(host), std::move(pending));
}

Tensor HostCopy::wait() {
  MOEFOLD_CHECK(host_.defined(), "HostCopy::wait on a copy never started or already waited for");
  if (pending_ != nullptr) pending_->finish();
  pending_.reset();
  return std::exchange(host_, Tensor());
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  copy(out, t);
  return out;
}

std::vector<float> to_host_together(std::span<const Tensor> tensors) {
  if (tensors.empty()) return {};
  int64_t total = 0;
  for (const Tensor& t : tensors) total += t.numel();
  const Tensor all = Tensor::empty({total}, DType::kFloat32, tensors.front().device());
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    copy(all.elements(offset, {t.numel()}), t.view({t.numel()}));
    offset += t.numel();
  }
  return all.to_vector();
}

Tensor float64_zeros(int64_t n, Device device) {
  static_assert(sizeof(double) == 2 * sizeof(float));
  Tensor words = Tensor::empty({2 * n}, DType::kFloat32, device);
  zero(words);
  return words;
}

double* float64_data(const Tensor& words) {
  MOEFOLD_CHECK(words.dtype() == DType::kFloat32 && words.numel() % 2 == 0,
                "float64 values need an even number of float32 words, not "
                    << words.shape_string());
  return reinterpret_cast<double*>(words.data());
}

std::vector<double> float64_to_host(const Tensor& words) {
  std::vector<double> values(words.numel() / 2);
  copy_memory(values.data(), float64_data(words), sizeof(double) * values.size());
  return values;
}

void add(const Tensor& y, const Tensor& x) {
  expect_numel(x, y.numel(), "add operand");
  Operands a("add", y);
  if (a.all_bf16({&y, &x})) return a.backend().add_bf16(a.bits(y), a.bits(x), y.numel());
  a.backend().add(a.out(y), a.in(x), y.numel());
  a.finish();
}

void axpy(const Tensor& y, float a, const Tensor& x) {
  expect_numel(x, y.numel(), "axpy operand");
  Operands o("axpy", y);
  if (o.all_bf16({&y, &x})) return o.backend().axpy_bf16(o.bits(y), a, o.bits(x), y.numel());
  o.backend().axpy(o.out(y), a, o.in(x), y.numel());
  o.finish();
}

void scale(const Tensor& x, float a) {
  Operands o("scale", x);
  o.backend().scale(o.out(x), a, x.numel());
  o.finish();
}

double square_sum(const Tensor& x) {
  Operands a("square_sum", x);
  return a.backend().square_sum(a.in(x), x.numel());
}

double square_sum_total(const std::vector<Tensor>& xs) {
  double total = 0.0;
  for (size_t first = 0, end = 0; first < xs.size(); first = end) {  // runs on one device
    Operands a("square_sum_total", xs[first]);
    std::vector<const float*> data;
    std::vector<int64_t> sizes;
    for (end = first; end < xs.size() && xs[end].device() == xs[first].device(); ++end) {
      data.push_back(a.in(xs[end]));
      sizes.push_back(xs[end].numel());
    }
    total += a.backend().square_sum_total(data, sizes);
  }
  return total;
}

double sum(const Tensor& x) {
  Operands a("sum", x);
  return a.backend().sum(a.in(x), x.numel());
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) {
  const int64_t O = w.dim(0), I = w.numel() / O, N = rows_of(x, I);
  expect_numel(y, N * O, "linear output");
  Operands a("linear_forward", x);
  a.backend().linear_forward_mixed(a.gemm_in(x), a.gemm_in(w), a.gemm_out(y), N, I, O,
                                   accumulate);
}

void linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx, bool accumulate) {
  const int64_t O = w.dim(0), I = w.numel() / O, N = rows_of(dy, O);
  expect_numel(dx, N * I, "linear dx");
  Operands a("linear_backward_dx", dy);
  a.backend().linear_backward_dx_mixed(a.gemm_in(dy), a.gemm_in(w), a.gemm_out(dx), N, I, O,
                                       accumulate);
}

void linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw) {
  const int64_t O = dw.dim(0), I = dw.numel() / O, N = rows_of(dy, O);
  expect_numel(x, N * I, "linear input");
  Operands a("linear_backward_dw", dy);
  a.backend().linear_backward_dw_mixed(a.gemm_in(dy), a.gemm_in(x), a.gemm_out(dw), N, I, O);
}

namespace {

struct GroupedShape {
  int64_t G, O, I;
};

GroupedShape grouped_shape(const Tensor& w, std::span<const int64_t> offsets) {
  MOEFOLD_CHECK(w.ndim() == 3, "grouped weights " << w.shape_string() << " are (G,O,I)");
  const GroupedShape s{w.dim(0), w.dim(1), w.dim(2)};
  MOEFOLD_CHECK(static_cast<int64_t>(offsets.size()) == s.G + 1,
                offsets.size() << " offsets for " << s.G << " groups");
  return s;
}

}  // namespace

void grouped_linear_forward(const Tensor& x, const Tensor& w, const Tensor& y,
                            std::span<const int64_t> offsets) {
  const auto [G, O, I] = grouped_shape(w, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(x.numel() >= N * I && y.numel() >= N * O, "grouped GEMM rows");
  Operands a("grouped_linear_forward", x);
  a.backend().grouped_linear_forward_mixed(a.gemm_in(x), a.gemm_in(w), a.gemm_out(y),
                                           offsets.data(), G, I, O);
}

void grouped_linear_backward_dx(const Tensor& dy, const Tensor& w, const Tensor& dx,
                                std::span<const int64_t> offsets, bool accumulate) {
  const auto [G, O, I] = grouped_shape(w, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(dy.numel() >= N * O && dx.numel() >= N * I, "grouped GEMM rows");
  Operands a("grouped_linear_backward_dx", dy);
  a.backend().grouped_linear_backward_dx_mixed(a.gemm_in(dy), a.gemm_in(w), a.gemm_out(dx),
                                               offsets.data(), G, I, O, accumulate);
}

void grouped_linear_backward_dw(const Tensor& dy, const Tensor& x, const Tensor& dw,
                                std::span<const int64_t> offsets) {
  const auto [G, O, I] = grouped_shape(dw, offsets);
  const int64_t N = offsets[G];
  MOEFOLD_CHECK(dy.numel() >= N * O && x.numel() >= N * I, "grouped GEMM rows");
  Operands a("grouped_linear_backward_dw", dy);
  a.backend().grouped_linear_backward_dw_mixed(a.gemm_in(dy), a.gemm_in(x), a.gemm_out(dw),
                                               offsets.data(), G, I, O);
}

void adamw_step(std::span<const AdamWOperands> tensors, const AdamWScalars& scalars) {
  if (tensors.empty()) return;
  Operands a("adamw_step", tensors.front().param);
  std::vector<AdamWTensor> raw;
  raw.reserve(tensors.size());
  for (const AdamWOperands& t : tensors) {
    const int64_t n = t.param.numel();
    for (const Tensor* state : {&t.grad, &t.exp_avg, &t.exp_avg_sq}) {
      expect_numel(*state, n, "AdamW state");
    }
    raw.push_back({a.f32(t.param), a.f32(t.grad), a.f32(t.exp_avg), a.f32(t.exp_avg_sq), n,
                   t.decay});
  }
  a.backend().adamw_step(raw, scalars);
}

}  // namespace moefold::ops
