#include "tensor/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_join.h"
#include "tensor/check.h"

namespace moefold {
namespace {

std::atomic<int64_t> g_current_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

void record_allocation(int64_t bytes) {
  const int64_t now = g_current_bytes.fetch_add(bytes) + bytes;
  int64_t peak = g_peak_bytes.load();
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

constexpr size_t kAlignment = 64;  // cache line; also what AVX-512 loads like

}  // namespace

// Owns one aligned CPU buffer and reports it to MemoryStats for its lifetime.
class Storage {
 public:
  explicit Storage(size_t bytes) : bytes_(bytes) {
    const size_t rounded = std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    data_ = std::aligned_alloc(kAlignment, rounded);
    if (data_ == nullptr) throw std::bad_alloc();
    record_allocation(static_cast<int64_t>(bytes_));
  }
  ~Storage() {
    std::free(data_);
    g_current_bytes.fetch_sub(static_cast<int64_t>(bytes_));
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

size_t dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }
const char* dtype_name(DType dtype) { return dtype == DType::kFloat32 ? "float32" : "bfloat16"; }

int64_t MemoryStats::current_bytes() { return g_current_bytes.load(); }
int64_t MemoryStats::peak_bytes() { return g_peak_bytes.load(); }
void MemoryStats::reset_peak() { g_peak_bytes.store(g_current_bytes.load()); }

static int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MOEFOLD_CHECK(d >= 0, "negative dimension " << d);
    n *= d;
  }
  return n;
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype, Device device) {
  MOEFOLD_CHECK(device == Device::kCpu, "CUDA tensors are created by the CUDA backend");
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(element_count(t.shape_)) *
                                         dtype_size(dtype));
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::from_vector(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t = empty(std::move(shape));
  MOEFOLD_CHECK(static_cast<int64_t>(values.size()) == t.numel(),
                values.size() << " values for shape " << t.shape_string());
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

int64_t Tensor::dim(int axis) const {
  const int n = ndim();
  if (axis < 0) axis += n;
  MOEFOLD_CHECK(axis >= 0 && axis < n, "axis " << axis << " of " << shape_string());
  return shape_[axis];
}

int64_t Tensor::numel() const { return element_count(shape_); }

std::string Tensor::shape_string() const { return "[" + absl::StrJoin(shape_, ", ") + "]"; }

void* Tensor::raw_data() const {
  MOEFOLD_CHECK(defined(), "undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_bytes_;
}

float* Tensor::data() const {
  MOEFOLD_CHECK(dtype_ == DType::kFloat32, "data() on a " << dtype_name(dtype_) << " tensor");
  return static_cast<float*>(raw_data());
}

Tensor Tensor::view(std::vector<int64_t> shape) const {
  MOEFOLD_CHECK(element_count(shape) == numel(),
                "view of " << shape_string() << " as [" << absl::StrJoin(shape, ", ") << "]");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  MOEFOLD_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                "rows [" << begin << ", " << end << ") of " << shape_string());
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.offset_bytes_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

void Tensor::fill(float value) const {
  float* p = data();
  std::fill(p, p + numel(), value);
}

void Tensor::zero() const { std::memset(raw_data(), 0, nbytes()); }

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  std::memcpy(t.raw_data(), raw_data(), nbytes());
  return t;
}

std::vector<float> Tensor::to_vector() const {
  const float* p = data();
  return std::vector<float>(p, p + numel());
}

}  // namespace moefold
