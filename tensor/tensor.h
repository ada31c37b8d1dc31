// Tensor: a shape over shared, allocator-tracked storage on one device. Storage comes from the
// device's backend (tensor/backend.h); views share storage with their source. Layers compute
// through tensor/ops.h; data() of a device tensor is a device pointer, for ops only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace moefold {

enum class DType { kFloat32, kBFloat16 };
enum class Device { kCpu, kCuda };

// Thrown when a device cannot provide a tensor's storage: names the device and the bytes, so
// the caller that knows the tensor and the rank can say which failed.
class DeviceOutOfMemory : public std::runtime_error {
 public:
  DeviceOutOfMemory(Device device, size_t bytes, const std::string& shape);
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
};

const char* device_name(Device device);

// The device new tensors go to unless told otherwise: one process drives one device (DESIGN.md),
// so the trainer sets it once at start-up, as cudaSetDevice does. Host-side buffers (routing
// decisions, checkpoint staging) name Device::kCpu explicitly. Default: kCpu.
Device default_device();
void set_default_device(Device device);

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

// Bytes currently held and the high-water mark, over every Tensor storage of this process.
struct MemoryStats {
  static int64_t current_bytes();
  static int64_t peak_bytes();
  static void reset_peak();  // peak := current
};

class Storage;

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(std::vector<int64_t> shape, DType dtype = DType::kFloat32,
                      Device device = default_device());
  static Tensor zeros(std::vector<int64_t> shape, DType dtype = DType::kFloat32,
                      Device device = default_device());
  static Tensor from_vector(std::vector<int64_t> shape, const std::vector<float>& values);

  bool defined() const { return storage_ != nullptr; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int axis) const;  // negative axes count from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::string shape_string() const;  // "[4, 16]"

  void* raw_data() const;
  float* data() const;  // float32 only (checked)

  // Same storage, new shape with the same element count.
  Tensor view(std::vector<int64_t> shape) const;
  // Rows [begin, end) along axis 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // `shape` elements starting at element `offset` of the flat storage, sharing it.
  Tensor elements(int64_t offset, std::vector<int64_t> shape) const;

  void fill(float value) const;
  void zero() const;
  Tensor clone() const;
  std::vector<float> to_vector() const;  // as float32 (bf16 widened), copied to the host

 private:
  size_t storage_bytes() const;

  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kFloat32;
  Device device_ = Device::kCpu;
};

}  // namespace moefold
