// The CUDA backend's memory, ordering, optimizer and small element-wise ops, and its
// registration. GEMMs: gemm.cu; layers' kernels: row_kernels.cu, token_kernels.cu,
// cross_entropy.cu, attention.cu.
#include <algorithm>
#include <cub/device/device_reduce.cuh>
#include <cuda/std/functional>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "absl/strings/str_format.h"
#include "tensor/check.h"
#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/cuda_device.h"
#include "tensor/cuda_entry.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/kernel_math.h"

namespace moefold::cuda {
namespace {

class CudaEvent final : public DeviceEvent {
 public:
  explicit CudaEvent(cudaStream_t stream) {
    MOEFOLD_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    MOEFOLD_CUDA_CHECK(cudaEventRecord(event_, stream));
  }
  ~CudaEvent() override { cudaEventDestroy(event_); }
  void wait() override { MOEFOLD_CUDA_CHECK(cudaEventSynchronize(event_)); }

 private:
  cudaEvent_t event_ = nullptr;
};

__global__ void fill_kernel(float* x, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = value;
  }
}

template <typename T>
__global__ void axpy_kernel(T* y, float a, const T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    store(y, i, load(y, i) + a * load(x, i));
  }
}

__global__ void scale_kernel(float* x, float a, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] *= a;
  }
}

// bf16 storage (MODEL.md "Mixed precision"): the same conversions as the CPU's (kernel_math.h).
__global__ void widen_bf16_kernel(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = bf16_bits_to_float(src[i]);
  }
}

__global__ void round_to_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = float_to_bf16_bits(src[i]);
  }
}

struct Square {
  __device__ double operator()(float x) const { return double(x) * x; }
};
struct Widen {
  __device__ double operator()(float x) const { return double(x); }
};

}  // namespace

// Host threads other than the one that created the backend (MPI's progress thread staging a
// buffer, a tensor freed there) must talk to this backend's device, not device 0.
void CudaBackend::bind_thread() const {
  thread_local int bound = -1;
  if (bound != device_) {
    MOEFOLD_CUDA_CHECK(cudaSetDevice(device_));
    bound = device_;
  }
}

CudaBackend::CudaBackend(int device) : device_(device) {
  MOEFOLD_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  MOEFOLD_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  name_ = prop.name;
  sm_major_ = prop.major;
  sm_minor_ = prop.minor;
  flash_mode_ = flash_attention_mode(std::getenv("MOEFOLD_FLASH_ATTENTION"));
  set_up_flash_attention(prop);
  MOEFOLD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MOEFOLD_CUBLAS_CHECK(cublasCreate(&cublas_));
  MOEFOLD_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // Float32 GEMMs stay IEEE float32 (no TF32), so that GPU runs track CPU runs: gemm.cu asks for
  // CUBLAS_COMPUTE_32F_PEDANTIC explicitly (this mode covers calls without a compute type), and
  // bf16 ones for CUBLAS_COMPUTE_32F, which runs on tensor cores.
  MOEFOLD_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_PEDANTIC_MATH));
  // Keep freed blocks in the pool instead of returning them to the driver at each sync.
  MOEFOLD_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
  uint64_t keep = UINT64_MAX;
  MOEFOLD_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep));
  uploads_ = std::make_unique<PinnedUploads>(size_t{16} << 20);
  downloads_ = std::make_unique<PinnedDownloads>();
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(stream_);
  uploads_.reset();
  downloads_.reset();
  cublasDestroy(cublas_);
  cudaStreamDestroy(stream_);
}

std::string CudaBackend::describe() const {
  return absl::StrFormat("cuda:%d (%s, sm_%d%d)", device_, name_, sm_major_, sm_minor_);
}

double CudaBackend::known_peak_flops(DType dtype) const {
  // Published dense peaks (no sparsity) of the SXM parts: float32 without tensor cores, bf16
  // with them. Unknown devices report 0 and the trainer measures instead.
  const bool bf16 = dtype == DType::kBFloat16;
  if (sm_major_ == 9 && sm_minor_ == 0) return bf16 ? 989.4e12 : 66.9e12;  // H100/H200
  if (sm_major_ == 8 && sm_minor_ == 0) return bf16 ? 312e12 : 19.5e12;    // A100
  return 0.0;
}

void* CudaBackend::allocate_from_pool(size_t bytes) {
  for (int attempt = 0;; ++attempt) {
    void* ptr = nullptr;
    const cudaError_t status = cudaMallocAsync(&ptr, bytes == 0 ? 1 : bytes, pool_, stream_);
    if (status != cudaErrorMemoryAllocation) {
      MOEFOLD_CUDA_CHECK(status);
      return ptr;
    }
    cudaGetLastError();  // not sticky: clear it, so the next check does not report it
    if (attempt == 1) return nullptr;
    // The frees queued on the stream done, the pool's cached blocks go back to the device, and
    // one more try may find the contiguous bytes.
    MOEFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));
    MOEFOLD_CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
  }
}

void* CudaBackend::allocate(size_t bytes) {
  bind_thread();
  return allocate_from_pool(bytes);  // null: Tensor names the tensor and its bytes
}

void CudaBackend::deallocate(void* ptr, size_t) {
  bind_thread();
  if (ptr != nullptr) MOEFOLD_CUDA_CHECK(cudaFreeAsync(ptr, stream_));
}

bool CudaBackend::owns(const void* ptr) const {
  // Called on any thread (MPI's progress thread asks before staging); an unbound thread's first
  // CUDA call would open a context on device 0, on every rank of a multi-GPU node.
  bind_thread();
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice && attributes.device == device_;
}

void CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  bind_thread();
  if (bytes == 0) return;
  MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  MOEFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host reads it next
}

std::unique_ptr<PendingHostCopy> CudaBackend::start_copy_to_host(void* host_dst, const void* src,
                                                                 size_t bytes) {
  bind_thread();
  return downloads_->start(host_dst, src, bytes, stream_);
}

void CudaBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  bind_thread();
  if (bytes == 0) return;
  uploads_->copy(dst, host_src, bytes, stream_);  // the caller may reuse host_src at once
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  bind_thread();
  if (bytes == 0 || dst == src) return;
  MOEFOLD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::zero(void* dst, size_t bytes) {
  if (bytes > 0) MOEFOLD_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_));
}

void CudaBackend::copy_rows(void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                            int64_t rows, int64_t cols, size_t element_bytes) {
  if (rows == 0 || cols == 0) return;
  MOEFOLD_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_stride * element_bytes, src,
                                       src_stride * element_bytes, cols * element_bytes, rows,
                                       cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::synchronize() { MOEFOLD_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

std::shared_ptr<DeviceEvent> CudaBackend::record_event() {
  return std::make_shared<CudaEvent>(stream_);
}

CudaBackend::Scratch::Scratch(CudaBackend& backend, size_t bytes) : backend_(backend) {
  ptr_ = backend.allocate_from_pool(bytes);
  if (ptr_ == nullptr) throw DeviceOutOfMemory(Device::kCuda, bytes, "(an op's scratch buffer)");
}

CudaBackend::Scratch::~Scratch() { cudaFreeAsync(ptr_, backend_.stream_); }

void CudaBackend::fill(float* x, float value, int64_t n) {
  if (n == 0) return;
  fill_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(x, value, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::add(float* y, const float* x, int64_t n) { axpy(y, 1.0f, x, n); }

void CudaBackend::axpy(float* y, float a, const float* x, int64_t n) {
  if (n == 0) return;
  axpy_kernel<float><<<blocks_for(n), kThreads, 0, stream_>>>(y, a, x, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::add_bf16(uint16_t* y, const uint16_t* x, int64_t n) { axpy_bf16(y, 1.0f, x, n); }

void CudaBackend::axpy_bf16(uint16_t* y, float a, const uint16_t* x, int64_t n) {
  if (n == 0) return;
  axpy_kernel<uint16_t><<<blocks_for(n), kThreads, 0, stream_>>>(y, a, x, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::widen_bf16(const uint16_t* src, float* dst, int64_t n) {
  if (n == 0) return;
  widen_bf16_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(src, dst, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::round_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  if (n == 0) return;
  round_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(src, dst, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

void CudaBackend::scale(float* x, float a, int64_t n) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(x, a, n);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

namespace {

// Σ transform(x) in float64 with CUB (a fixed reduction order: deterministic) for each of the
// arrays, written to out[i] on the device; the caller reads them back with one copy.
template <typename Transform>
void reduce_each(CudaBackend& backend, std::span<const float* const> xs,
                 std::span<const int64_t> ns, double* out, Transform transform) {
  size_t temp_bytes = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    size_t bytes = 0;
    MOEFOLD_CUDA_CHECK(cub::DeviceReduce::TransformReduce(nullptr, bytes, xs[i], out + i, ns[i],
                                                          ::cuda::std::plus<>{}, transform, 0.0,
                                                          backend.stream()));
    temp_bytes = std::max(temp_bytes, bytes);
  }
  CudaBackend::Scratch temp(backend, temp_bytes);
  for (size_t i = 0; i < xs.size(); ++i) {
    if (ns[i] == 0) {
      MOEFOLD_CUDA_CHECK(cudaMemsetAsync(out + i, 0, sizeof(double), backend.stream()));
      continue;
    }
    MOEFOLD_CUDA_CHECK(cub::DeviceReduce::TransformReduce(
        temp.as<void>(), temp_bytes, xs[i], out + i, ns[i], ::cuda::std::plus<>{}, transform, 0.0,
        backend.stream()));
  }
}

// The sums of reduce_each, read back with one host wait and added in order.
template <typename Transform>
double reduce_to_host(CudaBackend& backend, std::span<const float* const> xs,
                      std::span<const int64_t> ns, Transform transform) {
  if (xs.empty()) return 0.0;
  CudaBackend::Scratch sums(backend, xs.size() * sizeof(double));
  reduce_each(backend, xs, ns, sums.as<double>(), transform);
  std::vector<double> host(xs.size());
  backend.copy_to_host(host.data(), sums.as<double>(), host.size() * sizeof(double));
  double total = 0.0;
  for (double v : host) total += v;
  return total;
}

}  // namespace

double CudaBackend::square_sum(const float* x, int64_t n) {
  return reduce_to_host(*this, std::span(&x, 1), std::span(&n, 1), Square{});
}

double CudaBackend::sum(const float* x, int64_t n) {
  return reduce_to_host(*this, std::span(&x, 1), std::span(&n, 1), Widen{});
}

double CudaBackend::square_sum_total(std::span<const float* const> xs,
                                     std::span<const int64_t> ns) {
  return reduce_to_host(*this, xs, ns, Square{});
}

absl::Status register_cuda_backend(int device) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrFormat(
        "no usable CUDA driver or device for cuda:%d: %s", device, unavailable_reason()));
  }
  if (device < 0 || device >= count) {
    return absl::FailedPreconditionError(
        absl::StrFormat("cuda:%d does not exist: this machine shows %d GPU(s)", device, count));
  }
  if (has_backend(Device::kCuda)) {
    return absl::FailedPreconditionError("a CUDA backend is already registered in this process");
  }
  try {
    register_backend(std::make_unique<CudaBackend>(device));
  } catch (const CudaError& e) {
    return absl::InternalError(e.what());
  }
  return absl::OkStatus();
}

}  // namespace moefold::cuda

namespace moefold {

int cuda_device_count() { return cuda::device_count(); }

std::string cuda_unavailable_reason() { return cuda::unavailable_reason(); }

absl::Status register_cuda_device(int device) { return cuda::register_cuda_backend(device); }

void* cuda_compute_stream() {
  if (!has_backend(Device::kCuda)) return nullptr;
  auto* backend = dynamic_cast<cuda::CudaBackend*>(&backend_for(Device::kCuda));
  return backend != nullptr ? static_cast<void*>(backend->stream()) : nullptr;
}

void set_cuda_flash_attention(FlashAttentionMode mode) {
  MOEFOLD_CHECK(has_backend(Device::kCuda), "no CUDA backend registered");
  dynamic_cast<cuda::CudaBackend&>(backend_for(Device::kCuda)).set_flash_attention_mode(mode);
}

std::vector<std::string> cuda_attention_path_report() {
  if (!has_backend(Device::kCuda)) return {};
  auto* backend = dynamic_cast<cuda::CudaBackend*>(&backend_for(Device::kCuda));
  return backend != nullptr ? backend->attention_path_report() : std::vector<std::string>{};
}

}  // namespace moefold
