// bf16 storage through the op seam (MODEL.md "Mixed precision"): every op reads bf16 operands
// exactly, computes in float32 and rounds its bf16 outputs to nearest even. Two checks per op:
// - exact: on the same bf16-representable inputs, the bf16 run's outputs are the float32 run's
//   outputs rounded to bf16 (float32 outputs, such as weight gradients and statistics, equal);
// - tolerance against float32 on the unrounded inputs: each input and output rounding is a
//   relative error of at most 2^-9 ≈ 0.2%. An output summing K ≤ 16 products of rounded inputs
//   moves by at most 2·2^-9·Σ|products| in the worst case; with these random inputs the errors
//   partly cancel and every op stays well inside the stated bound, 2% of its largest output.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tensor/kernel_math.h"
#include "tensor/ops.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;
using testing::round_bf16;

struct Output {
  std::vector<float> values;
  bool bf16;  // stored as bf16 in the mixed-precision run
};

// How a case builds its activations and weights: their dtype, and whether the random inputs
// are first rounded to bf16 (so that float32 and bf16 runs see the same values).
struct Mode {
  DType act;
  bool round_inputs;
};

Tensor make(const Mode& m, std::vector<int64_t> shape, uint32_t seed, bool activation = true) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> values = random_floats(n, seed, -1.0f, 1.0f);
  if (m.round_inputs) {
    for (float& v : values) v = round_bf16(v);
  }
  const Tensor wide = Tensor::from_vector(shape, values);
  if (!activation || m.act == DType::kFloat32) return wide;
  Tensor t = Tensor::empty(std::move(shape), m.act);
  ops::cast(t, wide);
  return t;
}

Tensor f32(const Mode& m, std::vector<int64_t> shape, uint32_t seed) {
  return make(m, std::move(shape), seed, false);
}

std::vector<Output> outputs(std::initializer_list<Tensor> tensors) {
  std::vector<Output> out;
  for (const Tensor& t : tensors) out.push_back({t.to_vector(), t.dtype() == DType::kBFloat16});
  return out;
}

using OpCase = std::function<std::vector<Output>(const Mode&)>;
constexpr int64_t N = 6, I = 8, O = 5, H = 8, E = 4, K = 2, V = 16;

std::vector<std::pair<std::string, OpCase>> cases() {
  std::vector<std::pair<std::string, OpCase>> c;
  c.push_back({"linear", [](const Mode& m) {
    Tensor x = make(m, {N, I}, 1), w = make(m, {O, I}, 2), y = make(m, {N, O}, 3);
    Tensor dy = make(m, {N, O}, 4), dx = make(m, {N, I}, 5), dw = f32(m, {O, I}, 6);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, true);
    ops::linear_backward_dw(dy, x, dw);
    return outputs({y, dx, dw});
  }});
  c.push_back({"linear_float32_logits", [](const Mode& m) {
    Tensor x = make(m, {N, I}, 7), w = make(m, {O, I}, 8), z = f32(m, {N, O}, 9);
    ops::linear_forward(x, w, z);  // the LM head's and the router's float32 logits
    return outputs({z});
  }});
  c.push_back({"linear_float32_weight", [](const Mode& m) {
    // Operands of different dtypes: bf16 activations against a float32 weight.
    Tensor x = make(m, {N, I}, 62), w = f32(m, {O, I}, 63), y = make(m, {N, O}, 64);
    Tensor dy = make(m, {N, O}, 65), dx = make(m, {N, I}, 66);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, false);
    return outputs({y, dx});
  }});
  c.push_back({"grouped_linear", [](const Mode& m) {
    const std::vector<int64_t> offsets = {0, 2, 2, 6};
    Tensor x = make(m, {N, I}, 10), w = make(m, {3, O, I}, 11), y = make(m, {N, O}, 12);
    Tensor dy = make(m, {N, O}, 13), dx = make(m, {N, I}, 14), dw = f32(m, {3, O, I}, 15);
    ops::grouped_linear_forward(x, w, y, offsets);
    ops::grouped_linear_backward_dx(dy, w, dx, offsets, true);
    ops::grouped_linear_backward_dw(dy, x, dw, offsets);
    return outputs({y, dx, dw});
  }});
  c.push_back({"attention", [](const Mode& m) {
    const ops::AttentionShape s{2, 4, 4, 4, 2, 4};
    const std::vector<int32_t> pos = {0, 1, 2, 3};
    Tensor q = make(m, {2, 4, 4, 4}, 16), k = make(m, {2, 4, 2, 4}, 17);
    Tensor v = make(m, {2, 4, 2, 4}, 18), o = make(m, {2, 4, 4, 4}, 19);
    Tensor lse = f32(m, {2, 4, 4}, 20);
    ops::attention_forward(q, k, v, o, lse, pos, pos, s);
    // Backward reads an output of its own (each case feeds ops only inputs both runs share).
    Tensor dout = make(m, {2, 4, 4, 4}, 21), dq = make(m, q.shape(), 22);
    Tensor dk = make(m, k.shape(), 23), dv = make(m, v.shape(), 24);
    ops::attention_backward(dout, q, k, v, make(m, o.shape(), 60), lse, dq, dk, dv, pos, pos, s);
    return outputs({o, lse, dq, dk, dv});
  }});
  c.push_back({"rmsnorm", [](const Mode& m) {
    Tensor x = make(m, {N, H}, 25), w = make(m, {H}, 26), y = make(m, {N, H}, 27);
    Tensor rstd = f32(m, {N}, 28), dy = make(m, {N, H}, 29), dx = make(m, {N, H}, 30);
    Tensor dw = f32(m, {H}, 31);
    ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
    ops::rmsnorm_backward(dy, x, w, rstd, dx, dw, true);
    return outputs({y, rstd, dx, dw});
  }});
  c.push_back({"rope", [](const Mode& m) {
    const std::vector<int32_t> pos = {0, 3, 1, 7, 2, 5};
    Tensor x = make(m, {N, 2, 4}, 32), y = make(m, {N, 2, 4}, 33), dx = make(m, {N, 2, 4}, 34);
    ops::rope_forward(x, y, pos, 2, 4, 10000.0f);
    ops::rope_backward(x, dx, pos, 2, 4, 10000.0f);
    return outputs({y, dx});
  }});
  c.push_back({"swiglu", [](const Mode& m) {
    Tensor g = make(m, {N, H}, 35), u = make(m, {N, H}, 36), out = make(m, {N, H}, 37);
    Tensor dout = make(m, {N, H}, 38), dg = make(m, {N, H}, 39), du = make(m, {N, H}, 40);
    ops::swiglu_forward(g, u, out);
    ops::swiglu_backward(dout, g, u, dg, du);
    return outputs({out, dg, du});
  }});
  c.push_back({"permute_combine", [](const Mode& m) {
    const std::vector<int32_t> perm = {3, 0, 5, 2, 1, 4, 7, 6};  // assignments t·K + j
    Tensor x = make(m, {4, H}, 41), xs = make(m, {8, H}, 42), dx = make(m, {4, H}, 43);
    Tensor gates = f32(m, {4, K}, 44), out = make(m, {4, H}, 45), dy = make(m, {8, H}, 46);
    Tensor dgates = f32(m, {4, K}, 47);
    ops::permute_tokens(x, perm, xs, K);
    ops::permute_tokens_backward(xs, perm, dx, K);
    ops::combine_tokens(xs, perm, gates, out);
    ops::combine_tokens_backward(make(m, {4, H}, 61), xs, perm, gates, dy, dgates);
    return outputs({xs, dx, out, dy, dgates});
  }});
  c.push_back({"embedding", [](const Mode& m) {
    const std::vector<int32_t> tokens = {3, 0, 15, 3, 7, 9};
    Tensor table = make(m, {V, H}, 48), out = make(m, {N, H}, 49);
    Tensor dout = make(m, {N, H}, 50), dtable = f32(m, {V, H}, 51);
    ops::embedding_forward(tokens, table, out, V, 0);
    ops::embedding_backward(dout, tokens, dtable, V, 0);
    return outputs({out, dtable});
  }});
  c.push_back({"cross_entropy", [](const Mode& m) {
    const std::vector<int32_t> labels = {1, 15, 0, 7, 7, 3};
    const std::vector<float> mask = {1, 1, 0, 1, 1, 1};
    Tensor h = make(m, {N, H}, 52), w = make(m, {V, H}, 53), dh = make(m, {N, H}, 54);
    Tensor dw = f32(m, {V, H}, 55);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.25f, dh, dw, 4);
    return std::vector<Output>{{{static_cast<float>(loss)}, false},
                               {dh.to_vector(), dh.dtype() == DType::kBFloat16},
                               {dw.to_vector(), false}};
  }});
  c.push_back({"elementwise", [](const Mode& m) {
    Tensor y = make(m, {N, H}, 56), x = make(m, {N, H}, 57), z = make(m, {N, H}, 58);
    ops::add(y, x);
    ops::axpy(z, -0.75f, x);
    ops::scale(x, 3.0f);
    const Tensor r = make(m, {N, H}, 59);
    const double sq = ops::square_sum(r), s = ops::sum(r);
    auto out = outputs({y, z, x});
    out.push_back({{static_cast<float>(sq), static_cast<float>(s)}, false});
    return out;
  }});
  return c;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

class Bf16Ops : public ::testing::TestWithParam<std::pair<std::string, OpCase>> {};

TEST_P(Bf16Ops, IsFloat32RoundedOnTheSameInputs) {
  const auto mixed = GetParam().second({DType::kBFloat16, true});
  const auto wide = GetParam().second({DType::kFloat32, true});
  ASSERT_EQ(mixed.size(), wide.size());
  for (size_t o = 0; o < mixed.size(); ++o) {
    SCOPED_TRACE("output " + std::to_string(o));
    ASSERT_EQ(mixed[o].values.size(), wide[o].values.size());
    for (size_t i = 0; i < wide[o].values.size(); ++i) {
      const float want = mixed[o].bf16 ? round_bf16(wide[o].values[i]) : wide[o].values[i];
      ASSERT_EQ(mixed[o].values[i], want) << "element " << i;
    }
  }
}

TEST_P(Bf16Ops, IsWithinTwoPercentOfFloat32) {
  const auto mixed = GetParam().second({DType::kBFloat16, false});
  const auto exact = GetParam().second({DType::kFloat32, false});
  for (size_t o = 0; o < mixed.size(); ++o) {
    SCOPED_TRACE("output " + std::to_string(o));
    const float tolerance = 0.02f * std::max(max_abs(exact[o].values), 1e-3f);
    for (size_t i = 0; i < exact[o].values.size(); ++i) {
      EXPECT_NEAR(mixed[o].values[i], exact[o].values[i], tolerance) << "element " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, Bf16Ops, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.first; });

TEST(Bf16Ops, CastRoundsToNearestEvenAndWidensExactly) {
  // bf16 keeps 7 fraction bits. 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the tie goes to
  // the even one, 1. 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: the even one is
  // 1 + 2^-6. Widening gives back exactly the rounded value.
  const Tensor wide = Tensor::from_vector({3}, {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f});
  Tensor narrow = Tensor::empty({3}, DType::kBFloat16);
  ops::cast(narrow, wide);
  EXPECT_EQ(narrow.to_vector(), (std::vector<float>{1.0f, 1.0f + 4.0f / 256, -2.5f}));
  Tensor back = Tensor::empty({3});
  ops::cast(back, narrow);
  EXPECT_EQ(back.to_vector(), narrow.to_vector());
  EXPECT_EQ(narrow.nbytes(), 6u);
}

// MODEL.md keeps the router, the logits' softmax pieces, the statistics and the optimizer in
// float32: a bf16 operand there is one clear error naming the op.
TEST(Bf16Ops, Float32OnlyOperandsNameTheOp) {
  Tensor bf = Tensor::zeros({4}, DType::kBFloat16), f = Tensor::zeros({4});
  const AdamWScalars scalars{};
  try {
    const ops::AdamWOperands operands{bf, f, f, f, 0.0f};
    ops::adamw_step({&operands, 1}, scalars);
    FAIL() << "adamw_step took a bf16 parameter";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("ops::adamw_step"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no bf16 path"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::softmax_rows_forward(bf.view({1, 4}), f.view({1, 4})), std::exception);
}

}  // namespace
}  // namespace moefold
