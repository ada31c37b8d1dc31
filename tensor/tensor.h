// Tensor: a shape over shared, allocator-tracked storage. Views share storage with their source.
// Kernels take raw pointers and sizes (llm.c style); Tensor owns memory and carries shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moefold {

enum class DType { kFloat32, kBFloat16 };  // bf16 is reserved for the GPU backend.
enum class Device { kCpu, kCuda };

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
                      Device device = Device::kCpu);
  static Tensor zeros(std::vector<int64_t> shape, DType dtype = DType::kFloat32,
                      Device device = Device::kCpu);
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

  void fill(float value) const;
  void zero() const;
  Tensor clone() const;
  std::vector<float> to_vector() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  std::vector<int64_t> shape_;
  DType dtype_ = DType::kFloat32;
  Device device_ = Device::kCpu;
};

}  // namespace moefold
