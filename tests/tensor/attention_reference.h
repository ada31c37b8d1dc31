// The CPU attention as the reference of the GPU attention's schedules executed on the CPU
// (attention_plan_test, flash_schedule_test): both compare a schedule's outputs with it at bf16
// tolerance, the backward run from the schedule's own bf16 o, as the device runs it.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/attention_plan.h"
#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold::testing {

// A schedule's results: o (bf16 values), lse, and the gradients from zero.
struct AttentionResults {
  std::vector<float> o, lse, dq, dk, dv;
};

// Expects `got` to match the CPU attention on q, k, v, dout (host arrays, m's layouts).
inline void expect_matches_cpu_attention(const AttentionResults& got, const AttentionDims& m,
                                         const std::vector<float>& q, const std::vector<float>& k,
                                         const std::vector<float>& v,
                                         const std::vector<float>& dout,
                                         const std::vector<int32_t>& q_pos,
                                         const std::vector<int32_t>& k_pos) {
  const int64_t q_size = m.B * m.Sq * m.nh * m.d, kv_size = m.B * m.Skv * m.nkv * m.d;
  const ops::AttentionShape shape{m.B, m.Sq, m.Skv, m.nh, m.nkv, m.d};
  Tensor tq = Tensor::from_vector({q_size}, q), tk = Tensor::from_vector({kv_size}, k);
  Tensor tv = Tensor::from_vector({kv_size}, v), tdout = Tensor::from_vector({q_size}, dout);
  Tensor to = Tensor::zeros({q_size}), tlse = Tensor::zeros({m.B * m.nh * m.Sq});
  Tensor tdq = Tensor::zeros({q_size}), tdk = Tensor::zeros({kv_size});
  Tensor tdv = Tensor::zeros({kv_size});
  ops::attention_forward(tq, tk, tv, to, tlse, q_pos, k_pos, shape);
  expect_close(got.o, to.to_vector(), 1e-2, 1e-2, "o");
  const std::vector<float> lse = tlse.to_vector();
  ASSERT_EQ(got.lse.size(), lse.size());
  for (size_t i = 0; i < lse.size(); ++i) {
    if (lse[i] == -INFINITY) {
      EXPECT_EQ(got.lse[i], -INFINITY) << "row " << i;
    } else {
      EXPECT_NEAR(got.lse[i], lse[i], 1e-4) << "row " << i;
    }
  }
  Tensor o_bf16 = Tensor::from_vector({q_size}, got.o);
  ops::attention_backward(tdout, tq, tk, tv, o_bf16, tlse, tdq, tdk, tdv, q_pos, k_pos, shape);
  expect_close(got.dq, tdq.to_vector(), 2e-2, 2e-2, "dq");
  expect_close(got.dk, tdk.to_vector(), 2e-2, 2e-2, "dk");
  expect_close(got.dv, tdv.to_vector(), 2e-2, 2e-2, "dv");
}

}  // namespace moefold::testing
