#include "tensor/tensor.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "tensor/backend.h"
#include "tensor/check.h"

namespace moefold {
namespace {

std::atomic<Device> g_default_device{Device::kCpu};
std::atomic<int64_t> g_current_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

void record_allocation(int64_t bytes) {
  const int64_t now = g_current_bytes.fetch_add(bytes) + bytes;
  int64_t peak = g_peak_bytes.load();
  while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace

// Owns one buffer from its device's backend and reports it to MemoryStats for its lifetime.
class Storage {
 public:
  Storage(Device device, size_t bytes, const std::string& shape)
      : backend_(backend_for(device)), bytes_(bytes) {
    data_ = backend_.allocate(bytes);
    if (data_ == nullptr) throw DeviceOutOfMemory(device, bytes, shape);
    record_allocation(static_cast<int64_t>(bytes_));
  }
  ~Storage() {
    backend_.deallocate(data_, bytes_);
    g_current_bytes.fetch_sub(static_cast<int64_t>(bytes_));
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  Backend& backend() const { return backend_; }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend& backend_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

DeviceOutOfMemory::DeviceOutOfMemory(Device device, size_t bytes, const std::string& shape)
    : std::runtime_error(absl::StrCat("out of memory on ", device_name(device), ": a tensor ",
                                      shape, " of ", bytes, " bytes")),
      bytes_(bytes) {}

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

Device default_device() { return g_default_device.load(); }
void set_default_device(Device device) { g_default_device.store(device); }

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
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(
      device, static_cast<size_t>(element_count(t.shape_)) * dtype_size(dtype), t.shape_string());
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.zero();
  return t;
}

Tensor Tensor::from_vector(std::vector<int64_t> shape, const std::vector<float>& values) {
  Tensor t = empty(std::move(shape));
  MOEFOLD_CHECK(static_cast<int64_t>(values.size()) == t.numel(),
                values.size() << " values for shape " << t.shape_string());
  t.storage_->backend().copy_from_host(t.raw_data(), values.data(), t.nbytes());
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

Tensor Tensor::elements(int64_t offset, std::vector<int64_t> shape) const {
  const int64_t count = element_count(shape);
  const int64_t available = static_cast<int64_t>(
      (storage_bytes() - offset_bytes_) / dtype_size(dtype_));
  MOEFOLD_CHECK(offset >= 0 && offset + count <= available,
                "elements [" << offset << ", +" << count << ") of " << shape_string());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.offset_bytes_ += static_cast<size_t>(offset) * dtype_size(dtype_);
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

void Tensor::fill(float value) const { storage_->backend().fill(data(), value, numel()); }

void Tensor::zero() const { storage_->backend().zero(raw_data(), nbytes()); }

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  storage_->backend().copy(t.raw_data(), raw_data(), nbytes());
  return t;
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (dtype_ == DType::kFloat32) {
    storage_->backend().copy_to_host(out.data(), data(), nbytes());
    return out;
  }
  std::vector<uint16_t> bits(out.size());
  storage_->backend().copy_to_host(bits.data(), raw_data(), nbytes());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = bf16_bits_to_float(bits[i]);
  return out;
}

size_t Tensor::storage_bytes() const { return storage_->bytes(); }

}  // namespace moefold
