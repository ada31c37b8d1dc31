// The emulated device refuses what a GPU refuses, so the CUDA backend's suite under emulation
// (cuda_emulated_tests) fails where the GPU would: launches over the limits or without their
// shared-memory opt-in, kernels handed host memory, copies whose kind disagrees with where the
// memory lies, and cuBLAS matrices outside device memory. Its GEMMs follow cuBLAS's
// column-major contract, and fresh device memory reads as NaN. Its streams run behind the host
// as a GPU's do, so host code that does not wait where a GPU needs it to reads wrong data.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace moefold::cuda_emulation {
namespace {

void write_kernel(float* out, float value) { out[blockIdx.x * blockDim.x + threadIdx.x] = value; }

void shared_kernel(float* out) {
  out[threadIdx.x] = static_cast<float>(moefold::cuda::dynamic_shared_memory() != nullptr);
}

float* device_floats(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMallocAsync(&p, n * sizeof(float), nullptr), cudaSuccess);
  return static_cast<float*>(p);
}

TEST(EmulatedRuntime, LaunchesRunAndTheirRefusalsWaitForCudaGetLastError) {
  float* out = device_floats(64);
  Launch(write_kernel, dim3(2), dim3(32))(out, 3.0f);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<float> host(64);
  ASSERT_EQ(cudaMemcpyAsync(host.data(), out, 256, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(host[63], 3.0f);

  Launch(write_kernel, dim3(1), dim3(2048))(out, 1.0f);  // over 1024 threads
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once, then cleared

  Launch(shared_kernel, dim3(1), dim3(32), 64 << 10)(out);  // over 48 KiB, not opted in
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(
      cudaFuncSetAttribute(shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10),
      cudaSuccess);
  Launch(shared_kernel, dim3(1), dim3(32), 64 << 10)(out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  Launch(write_kernel, dim3(1), dim3(32))(host.data(), 1.0f);  // pageable host memory
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(cudaFreeAsync(out, nullptr), cudaSuccess);
}

TEST(EmulatedRuntime, FreshDeviceMemoryIsNanAndCopiesMustAgreeWithTheirKind) {
  float* dev = device_floats(4);
  float host[4] = {};
  ASSERT_EQ(cudaMemcpyAsync(host, dev, sizeof(host), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_TRUE(std::isnan(host[0]));
  EXPECT_EQ(cudaMemcpyAsync(host, dev, sizeof(host), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);  // the directions swapped
  EXPECT_EQ(cudaMemcpyAsync(dev, host, 2 * sizeof(host), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);  // past the allocation's end
  EXPECT_EQ(cudaMemsetAsync(host, 0, sizeof(host)), cudaErrorInvalidValue);
  cudaGetLastError();
  EXPECT_EQ(cudaFreeAsync(host, nullptr), cudaErrorInvalidDevicePointer);
  EXPECT_EQ(cudaFreeAsync(dev, nullptr), cudaSuccess);
  cudaGetLastError();
}

TEST(EmulatedRuntime, KernelsReadOnlyTheCurrentDevicesMemory) {
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  float* on_one = device_floats(32);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Launch(write_kernel, dim3(1), dim3(32))(on_one, 1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  Launch(write_kernel, dim3(1), dim3(32))(on_one, 1.0f);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFreeAsync(on_one, nullptr), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

TEST(EmulatedRuntime, GemmsAreColumnMajorWithTransposesAndLeadingDimensions) {
  cublasHandle_t handle = nullptr;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  // op(A) (2 × 3) = Aᵀ with A stored (3 × 2) column-major, lda 4; B (3 × 2), ldb 3; C ldc 5.
  const std::vector<float> a = {1, 2, 3, 0, 4, 5, 6, 0}, b = {1, 0, 2, 0, 1, 1};
  float* A = device_floats(a.size());
  float* B = device_floats(b.size());
  float* C = device_floats(10);
  cudaMemcpyAsync(A, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpyAsync(B, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
  const float alpha = 2.0f, beta = 0.0f;
  ASSERT_EQ(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &alpha, A, CUDA_R_32F, 4, B,
                         CUDA_R_32F, 3, &beta, C, CUDA_R_32F, 5, CUBLAS_COMPUTE_32F_PEDANTIC,
                         CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  std::vector<float> c(10);
  cudaMemcpyAsync(c.data(), C, 40, cudaMemcpyDeviceToHost);
  // Aᵀ = [[1 2 3], [4 5 6]]; B = [[1 0], [0 1], [2 1]]: AᵀB = [[7 5], [16 11]].
  EXPECT_EQ(c[0], 14.0f);
  EXPECT_EQ(c[1], 32.0f);
  EXPECT_EQ(c[5], 10.0f);
  EXPECT_EQ(c[6], 22.0f);
  EXPECT_TRUE(std::isnan(c[2]));  // between the columns: untouched
  std::vector<float> host_b(b);
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, 2, 2, 3, &alpha, A, CUDA_R_32F, 4,
                         host_b.data(), CUDA_R_32F, 3, &beta, C, CUDA_R_32F, 5,
                         CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);  // B in host memory
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &alpha, A, CUDA_R_32F, 1, B,
                         CUDA_R_32F, 3, &beta, C, CUDA_R_32F, 5, CUBLAS_COMPUTE_32F_PEDANTIC,
                         CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);  // lda below op(A)'s rows
  for (float* p : {A, B, C}) cudaFreeAsync(p, nullptr);
  cublasDestroy(handle);
}

// A stream's work runs when the host waits for it, so reading a result before the wait, or
// rewriting pinned memory that an issued copy reads, shows; copies into pageable memory are done
// when they return and copies from it take the source as it was at the call, as the runtime
// documents.
TEST(EmulatedRuntime, StreamsRunBehindTheHostAsAGpusDo) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* dev = device_floats(32);
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 32 * sizeof(float)), cudaSuccess);
  pinned[0] = 0.0f;
  Launch(write_kernel, dim3(1), dim3(32), 0, stream)(dev, 5.0f);
  ASSERT_EQ(cudaMemcpyAsync(pinned, dev, 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
  EXPECT_NE(pinned[0], 5.0f);  // not yet: the host did not wait
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(pinned[0], 5.0f);

  pinned[0] = 1.0f;
  ASSERT_EQ(cudaMemcpyAsync(dev, pinned, 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
  pinned[0] = 2.0f;  // before the stream reached the copy: the copy reads this
  float pageable = 3.0f;
  ASSERT_EQ(cudaMemcpyAsync(dev + 1, &pageable, 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
  pageable = 4.0f;  // after the call staged it: the copy does not see this
  float back[2] = {};
  ASSERT_EQ(cudaMemcpyAsync(back, dev, sizeof(back), cudaMemcpyDeviceToHost, stream), cudaSuccess);
  EXPECT_EQ(back[0], 2.0f);  // done on return: into pageable memory
  EXPECT_EQ(back[1], 3.0f);

  // Freed when the stream reaches the free: the kernel issued before it still writes there.
  cudaEvent_t done = nullptr;
  ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
  Launch(write_kernel, dim3(1), dim3(32), 0, stream)(dev, 6.0f);
  ASSERT_EQ(cudaMemcpyAsync(pinned, dev, 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(dev, stream), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(done, stream), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(done), cudaSuccess);
  EXPECT_EQ(pinned[0], 6.0f);
  EXPECT_EQ(cudaEventDestroy(done), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

}  // namespace
}  // namespace moefold::cuda_emulation
