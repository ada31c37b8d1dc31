// AdamW over every parameter tensor in one launch (multi-tensor apply): the tensors' elements in
// chunks (tensor/multi_tensor.h), one block per chunk, each element updated by kernel_math.h's
// adamw_update as on the CPU. The tensor and chunk tables go up through the pinned ring, so the
// step costs the host no wait.
#include <cstdint>
#include <vector>

#include "tensor/cuda/cuda_backend.h"
#include "tensor/cuda/cuda_check.h"
#include "tensor/cuda/launch_utils.cuh"
#include "tensor/kernel_math.h"
#include "tensor/multi_tensor.h"

namespace moefold::cuda {
namespace {

constexpr int64_t kChunkElements = int64_t{1} << 16;

__global__ void multi_tensor_adamw_kernel(const AdamWTensor* tensors, const TensorChunk* chunks,
                                          AdamWScalars scalars) {
  const TensorChunk chunk = chunks[blockIdx.x];
  const AdamWTensor t = tensors[chunk.tensor];
  scalars.decay = t.decay;
  for (int64_t i = chunk.begin + threadIdx.x; i < chunk.end; i += blockDim.x) {
    adamw_update(&t.param[i], t.grad[i], &t.exp_avg[i], &t.exp_avg_sq[i], scalars);
  }
}

}  // namespace

void CudaBackend::adamw_step(std::span<const AdamWTensor> tensors, const AdamWScalars& scalars) {
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  for (const AdamWTensor& t : tensors) sizes.push_back(t.n);
  const std::vector<TensorChunk> chunks = tensor_chunks(sizes, kChunkElements);
  if (chunks.empty()) return;
  auto tensors_dev = upload(tensors.data(), static_cast<int64_t>(tensors.size()));
  auto chunks_dev = upload(chunks.data(), static_cast<int64_t>(chunks.size()));
  multi_tensor_adamw_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, stream_>>>(
      tensors_dev->as<AdamWTensor>(), chunks_dev->as<TensorChunk>(), scalars);
  MOEFOLD_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::cuda
