// The chunk table of multi-tensor apply (tensor/multi_tensor.h), which the CUDA AdamW launches
// one block per chunk of: every element of every tensor in exactly one chunk, in bounds, and the
// table executed here with adamw_update equals the CPU backend's AdamW step.
#include "tensor/multi_tensor.h"

#include <gtest/gtest.h>

#include <vector>

#include "tensor/kernel_math.h"
#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

TEST(MultiTensor, ChunksCoverEveryElementOnceInBounds) {
  const std::vector<int64_t> sizes = {0, 1, 7, 8, 9, 0, 24, 3};
  const std::vector<TensorChunk> chunks = tensor_chunks(sizes, 8);
  std::vector<std::vector<int>> seen(sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) seen[t].assign(sizes[t], 0);
  int64_t previous = -1;
  for (const TensorChunk& c : chunks) {
    ASSERT_GE(c.tensor, previous) << "tensors in order";
    previous = c.tensor;
    ASSERT_LT(c.begin, c.end) << "no empty chunk";
    ASSERT_LE(c.end - c.begin, 8);
    ASSERT_LE(c.end, sizes[c.tensor]);
    for (int64_t i = c.begin; i < c.end; ++i) ++seen[c.tensor][i];
  }
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t i = 0; i < sizes[t]; ++i) {
      EXPECT_EQ(seen[t][i], 1) << "tensor " << t << " [" << i << "]";
    }
  }
  EXPECT_EQ(chunks.size(), 1u + 1 + 1 + 2 + 3 + 1);
  EXPECT_TRUE(tensor_chunks(std::vector<int64_t>{0, 0}, 8).empty());
}

TEST(MultiTensor, ChunkedAdamWEqualsTheCpuStep) {
  const std::vector<int64_t> sizes = {5, 0, 19, 1};
  const AdamWScalars scalars{0.9f, 0.95f, 2e-3f, 1.1f, 1e-8f, 0.0f};
  std::vector<ops::AdamWOperands> tensors;
  std::vector<std::vector<float>> param, grad, m, v;
  for (size_t t = 0; t < sizes.size(); ++t) {
    const uint32_t seed = 10 * static_cast<uint32_t>(t);
    param.push_back(testing::random_floats(sizes[t], seed + 1, -1.0f, 1.0f));
    grad.push_back(testing::random_floats(sizes[t], seed + 2, -1.0f, 1.0f));
    m.push_back(testing::random_floats(sizes[t], seed + 3, -1.0f, 1.0f));
    v.push_back(testing::random_floats(sizes[t], seed + 4, 0.0f, 1.0f));
    tensors.push_back({Tensor::from_vector({sizes[t]}, param[t]),
                       Tensor::from_vector({sizes[t]}, grad[t]),
                       Tensor::from_vector({sizes[t]}, m[t]), Tensor::from_vector({sizes[t]}, v[t]),
                       t == 2 ? 0.0f : 3e-4f});
  }
  ops::adamw_step(tensors, scalars);
  for (const TensorChunk& c : tensor_chunks(sizes, 4)) {
    AdamWScalars own = scalars;
    own.decay = tensors[c.tensor].decay;
    for (int64_t i = c.begin; i < c.end; ++i) {
      adamw_update(&param[c.tensor][i], grad[c.tensor][i], &m[c.tensor][i], &v[c.tensor][i], own);
    }
  }
  for (size_t t = 0; t < sizes.size(); ++t) {
    EXPECT_EQ(tensors[t].param.to_vector(), param[t]) << "tensor " << t;
    EXPECT_EQ(tensors[t].exp_avg.to_vector(), m[t]) << "tensor " << t;
    EXPECT_EQ(tensors[t].exp_avg_sq.to_vector(), v[t]) << "tensor " << t;
  }
}

}  // namespace
}  // namespace moefold
