#include "model/parameter.h"

#include "model/init.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {

TensorLayout TensorLayout::replicated(std::string name, std::vector<int64_t> global_shape) {
  TensorLayout layout;
  layout.name = std::move(name);
  layout.local_shape = global_shape;
  layout.local_offset.assign(global_shape.size(), 0);
  layout.global_shape = std::move(global_shape);
  return layout;
}

TensorLayout TensorLayout::split(int axis, ShardGroup group, int parts, int index) const {
  MOEFOLD_CHECK(axis >= 0 && axis < static_cast<int>(local_shape.size()), name);
  MOEFOLD_CHECK(parts >= 1 && index >= 0 && index < parts, name);
  MOEFOLD_CHECK(local_shape[axis] % parts == 0,
                name << ": axis " << axis << " of extent " << local_shape[axis]
                     << " is not divisible into " << parts << " parts");
  TensorLayout out = *this;
  const int64_t piece = local_shape[axis] / parts;
  out.local_shape[axis] = piece;
  out.local_offset[axis] += piece * index;
  out.splits.push_back({axis, group, parts, index});
  return out;
}

static int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t TensorLayout::global_numel() const { return product(global_shape); }
int64_t TensorLayout::local_numel() const { return product(local_shape); }

const Tensor& Parameter::compute_value() const {
  if (!compute.defined()) return value;
  if (compute_stale) {
    ops::cast(compute, value);
    compute_stale = false;
  }
  return compute;
}

Parameter* ParameterRegistry::add(TensorLayout layout) {
  MOEFOLD_CHECK(find(layout.name) == nullptr, "duplicate parameter " << layout.name);
  auto p = std::make_unique<Parameter>();
  p->value = Tensor::zeros(layout.local_shape);
  p->grad = Tensor::zeros(layout.local_shape);
  p->layout = std::move(layout);
  parameters_.push_back(std::move(p));
  return parameters_.back().get();
}

Parameter* ParameterRegistry::add_weight(TensorLayout layout, float init_std, bool is_expert) {
  Parameter* p = add(std::move(layout));
  p->init = InitKind::kNormal;
  p->init_std = init_std;
  p->is_expert = is_expert;
  p->weight_decay = true;
  return p;
}

Parameter* ParameterRegistry::add_norm(TensorLayout layout) {
  Parameter* p = add(std::move(layout));
  p->init = InitKind::kOnes;
  p->weight_decay = false;
  return p;
}

Buffer* ParameterRegistry::add_buffer(TensorLayout layout, InitKind init) {
  auto b = std::make_unique<Buffer>();
  b->value = Tensor::zeros(layout.local_shape);
  b->layout = std::move(layout);
  b->init = init;
  buffers_.push_back(std::move(b));
  return buffers_.back().get();
}

Parameter* ParameterRegistry::find(const std::string& name) const {
  for (const auto& p : parameters_) {
    if (p->name() == name) return p.get();
  }
  return nullptr;
}

// Values are drawn on the host and copied to the tensor's device (no copy on the CPU backend).
static void init_on_device(const Tensor& value, const TensorLayout& layout, InitKind kind,
                           float std, uint64_t seed) {
  const Tensor host = ops::to_host(value);
  init_tensor(layout, kind, std, seed, host.data());
  if (host.raw_data() != value.raw_data()) ops::copy(value, host);
}

void ParameterRegistry::init(uint64_t seed) {
  for (const auto& p : parameters_) init_on_device(p->value, p->layout, p->init, p->init_std, seed);
  for (const auto& b : buffers_) init_on_device(b->value, b->layout, b->init, 0.0f, seed);
  mark_values_changed();
}

void ParameterRegistry::set_compute_dtype(DType dtype) {
  for (const auto& p : parameters_) {
    const bool copy = dtype != DType::kFloat32 && !p->float32_compute;
    p->compute = copy ? Tensor::empty(p->value.shape(), dtype, p->value.device()) : Tensor();
  }
  mark_values_changed();
}

void ParameterRegistry::mark_values_changed() {
  for (const auto& p : parameters_) p->compute_stale = true;
}

void ParameterRegistry::zero_grad() {
  for (const auto& p : parameters_) p->grad.zero();
}

}  // namespace moefold
