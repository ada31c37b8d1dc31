// Every op of tensor/ops.h on a second device against the CPU backend, on the same inputs
// (ggml's test-backend-ops): the outputs, copied back to the host, must agree. On a machine
// without a GPU the second device is the host-memory stand-in (host_device.h), whose math is the
// CPU's, so they must be equal; a real device gets its precision's tolerance. The test also
// checks that the tensors each op writes live on the device it ran on.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tensor/check.h"
#include "tensor/ops.h"
#include "tests/tensor/host_device.h"
#include "tests/tensor/kernel_test_util.h"

namespace moefold {
namespace {

using testing::random_floats;
using testing::random_ints;

// Builds the op's inputs on `device` from fixed host values and returns every output, on the
// host, in a fixed order.
using OpCase = std::function<std::vector<std::vector<float>>(Device device)>;

Tensor on(Device device, std::vector<int64_t> shape, const std::vector<float>& values) {
  return ops::to_device(Tensor::from_vector(std::move(shape), values), device);
}

Tensor random_on(Device device, std::vector<int64_t> shape, uint32_t seed, float lo = -1.0f,
                 float hi = 1.0f) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return on(device, std::move(shape), random_floats(n, seed, lo, hi));
}

// random_on's values stored as bf16 (rounded to nearest even).
Tensor bf16_on(Device device, std::vector<int64_t> shape, uint32_t seed) {
  const Tensor wide = random_on(device, shape, seed);
  Tensor narrow = Tensor::empty(std::move(shape), DType::kBFloat16, device);
  ops::cast(narrow, wide);
  return narrow;
}

std::vector<std::vector<float>> outputs(Device device, std::initializer_list<Tensor> tensors) {
  std::vector<std::vector<float>> out;
  for (const Tensor& t : tensors) {
    EXPECT_EQ(t.device(), device) << "an output left the op's device";
    out.push_back(t.to_vector());
  }
  return out;
}

constexpr int64_t N = 6, I = 8, O = 5, H = 8, E = 4, K = 2, V = 16;

std::vector<std::pair<std::string, OpCase>> op_cases() {
  std::vector<std::pair<std::string, OpCase>> cases;
  cases.push_back({"linear", [](Device d) {
    Tensor x = random_on(d, {N, I}, 1), w = random_on(d, {O, I}, 2);
    Tensor y = random_on(d, {N, O}, 3), dy = random_on(d, {N, O}, 4);
    Tensor dx = random_on(d, {N, I}, 5), dw = random_on(d, {O, I}, 6);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, true);
    ops::linear_backward_dw(dy, x, dw);
    return outputs(d, {y, dx, dw});
  }});
  cases.push_back({"grouped_linear", [](Device d) {
    const std::vector<int64_t> offsets = {0, 2, 2, 6};  // an empty group in the middle
    Tensor x = random_on(d, {N, I}, 7), w = random_on(d, {3, O, I}, 8);
    Tensor y = random_on(d, {N, O}, 9), dx = random_on(d, {N, I}, 10);
    Tensor dw = random_on(d, {3, O, I}, 11);
    ops::grouped_linear_forward(x, w, y, offsets);
    ops::grouped_linear_backward_dx(y, w, dx, offsets, true);
    ops::grouped_linear_backward_dw(y, x, dw, offsets);
    return outputs(d, {y, dx, dw});
  }});
  // MODEL.md "Mixed precision": bf16 operands and outputs with float32 weight gradients (the
  // native bf16 GEMMs of a device), then the mixes that a device handles by widening one
  // operand: bf16 activations against float32 weights, and a bf16 output of float32 operands.
  cases.push_back({"linear_bf16", [](Device d) {
    Tensor x = bf16_on(d, {N, I}, 46), w = bf16_on(d, {O, I}, 47), w32 = random_on(d, {O, I}, 48);
    Tensor y = bf16_on(d, {N, O}, 49), dy = bf16_on(d, {N, O}, 50), dx = bf16_on(d, {N, I}, 51);
    Tensor dw = random_on(d, {O, I}, 52), y32 = random_on(d, {N, O}, 53);
    Tensor x32 = random_on(d, {N, I}, 54), y16 = bf16_on(d, {N, O}, 55);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, false);
    ops::linear_backward_dw(dy, x, dw);
    ops::linear_forward(x, w32, y32, true);
    ops::linear_forward(x32, w32, y16, true);
    return outputs(d, {y, dx, dw, y32, y16});
  }});
  cases.push_back({"grouped_linear_bf16", [](Device d) {
    const std::vector<int64_t> offsets = {0, 3, 3, 6};
    Tensor x = bf16_on(d, {N, I}, 56), w = bf16_on(d, {3, O, I}, 57);
    Tensor y = bf16_on(d, {N, O}, 58), dx = bf16_on(d, {N, I}, 59);
    Tensor dw = random_on(d, {3, O, I}, 60);
    ops::grouped_linear_forward(x, w, y, offsets);
    ops::grouped_linear_backward_dx(y, w, dx, offsets, true);
    ops::grouped_linear_backward_dw(y, x, dw, offsets);
    return outputs(d, {y, dx, dw});
  }});
  cases.push_back({"attention", [](Device d) {
    const ops::AttentionShape s{2, 4, 4, 4, 2, 4};
    const std::vector<int32_t> pos = {0, 1, 2, 3};
    Tensor q = random_on(d, {2, 4, 4, 4}, 12), k = random_on(d, {2, 4, 2, 4}, 13);
    Tensor v = random_on(d, {2, 4, 2, 4}, 14), dout = random_on(d, {2, 4, 4, 4}, 15);
    Tensor o = Tensor::empty({2, 4, 4, 4}, DType::kFloat32, d);
    Tensor lse = Tensor::empty({2, 4, 4}, DType::kFloat32, d);
    Tensor dq = Tensor::zeros(q.shape(), DType::kFloat32, d);
    Tensor dk = Tensor::zeros(k.shape(), DType::kFloat32, d);
    Tensor dv = Tensor::zeros(v.shape(), DType::kFloat32, d);
    ops::attention_forward(q, k, v, o, lse, pos, pos, s);
    ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, pos, pos, s);
    Tensor o2 = random_on(d, o.shape(), 16), lse2 = random_on(d, lse.shape(), 17);
    ops::attention_merge(o2, lse2, o, lse, s);
    return outputs(d, {o, lse, dq, dk, dv, o2, lse2});
  }});
  cases.push_back({"attention_bf16", [](Device d) {
    // Positions out of order and a query that sees no key (position −1): the bf16 path masks by
    // positions, as the float32 one does, and gives that row lse −inf and no output.
    const ops::AttentionShape s{2, 5, 6, 4, 2, 8};
    const std::vector<int32_t> q_pos = {4, -1, 0, 2, 5}, k_pos = {0, 1, 5, 2, 3, 4};
    Tensor q = bf16_on(d, {2, 5, 4, 8}, 61), k = bf16_on(d, {2, 6, 2, 8}, 62);
    Tensor v = bf16_on(d, {2, 6, 2, 8}, 63), dout = bf16_on(d, {2, 5, 4, 8}, 64);
    Tensor o = Tensor::empty(q.shape(), DType::kBFloat16, d);
    Tensor lse = Tensor::empty({2, 4, 5}, DType::kFloat32, d);
    Tensor dq = bf16_on(d, q.shape(), 65), dk = bf16_on(d, k.shape(), 66);
    Tensor dv = bf16_on(d, v.shape(), 67);
    ops::attention_forward(q, k, v, o, lse, q_pos, k_pos, s);
    ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, q_pos, k_pos, s);
    // Ring attention's forms: float32 dK/dV under bf16, and the merge of bf16 partial outputs.
    Tensor dk32 = random_on(d, k.shape(), 81), dv32 = random_on(d, v.shape(), 82);
    ops::attention_backward(dout, q, k, v, o, lse, dq, dk32, dv32, q_pos, k_pos, s);
    Tensor o2 = bf16_on(d, o.shape(), 83), lse2 = random_on(d, lse.shape(), 84);
    ops::attention_merge(o2, lse2, o, lse, s);
    return outputs(d, {o, lse, dq, dk, dv, dk32, dv32, o2, lse2});
  }});
  // The row-wise and element-wise layers on bf16 activations and compute weights, with float32
  // statistics, gate weights and weight gradients (a device loads bf16 directly).
  cases.push_back({"layers_bf16", [](Device d) {
    const std::vector<int32_t> pos = {3, 0, 7, 1, 2, 5};
    const std::vector<int32_t> perm = {5, 0, 3, 11, 8, 1, 6};
    const std::vector<int32_t> tokens = random_ints(N, 68, 0, V);
    const int64_t R = static_cast<int64_t>(perm.size());
    Tensor x = bf16_on(d, {N, H}, 69), w = bf16_on(d, {H}, 70), y = bf16_on(d, {N, H}, 71);
    Tensor rstd = Tensor::empty({N}, DType::kFloat32, d), dx = bf16_on(d, {N, H}, 72);
    Tensor dw = random_on(d, {H}, 73);
    ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
    ops::rmsnorm_backward(y, x, w, rstd, dx, dw, true);
    Tensor r = bf16_on(d, {N, 2, 4}, 74), dr = bf16_on(d, {N, 2, 4}, 75);
    ops::rope_forward(r, r, pos, 2, 4, 10000.0f);
    ops::rope_backward(r, dr, pos, 2, 4, 10000.0f);
    Tensor g = bf16_on(d, {N, H}, 76), u = bf16_on(d, {N, H}, 77), s = bf16_on(d, {N, H}, 78);
    Tensor dg = bf16_on(d, {N, H}, 79), du = bf16_on(d, {N, H}, 80);
    ops::swiglu_forward(g, u, s);
    ops::swiglu_backward(s, g, u, dg, du);
    Tensor xs = bf16_on(d, {R, H}, 81), gates = random_on(d, {N, K}, 82);
    Tensor out = bf16_on(d, {N, H}, 83), dys = bf16_on(d, {R, H}, 84);
    Tensor dgates = random_on(d, {N, K}, 85), dxp = bf16_on(d, {N, H}, 86);
    ops::permute_tokens(x, perm, xs, K);
    ops::combine_tokens(xs, perm, gates, out);
    ops::combine_tokens_backward(out, xs, perm, gates, dys, dgates);
    ops::permute_tokens_backward(dys, perm, dxp, K);
    Tensor table = bf16_on(d, {V / 2, H}, 87), e = bf16_on(d, {N, H}, 88);
    Tensor dtable = random_on(d, {V / 2, H}, 89);
    ops::embedding_forward(tokens, table, e, V, V / 2);
    ops::embedding_backward(e, tokens, dtable, V, V / 2);
    ops::add(e, x);
    ops::axpy(e, -0.5f, s);
    return outputs(d, {y, rstd, dx, dw, r, dr, s, dg, du, xs, out, dys, dgates, dxp, dtable, e});
  }});
  cases.push_back({"rmsnorm", [](Device d) {
    Tensor x = random_on(d, {N, H}, 18), w = random_on(d, {H}, 19), dy = random_on(d, {N, H}, 20);
    Tensor y = Tensor::empty({N, H}, DType::kFloat32, d), rstd = Tensor::empty({N}, DType::kFloat32, d);
    Tensor dx = random_on(d, {N, H}, 21), dw = random_on(d, {H}, 22);
    ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
    ops::rmsnorm_backward(dy, x, w, rstd, dx, dw, true);
    return outputs(d, {y, rstd, dx, dw});
  }});
  cases.push_back({"rope", [](Device d) {
    const std::vector<int32_t> pos = {3, 0, 7, 1, 2, 5};
    Tensor x = random_on(d, {N, 2, 4}, 23), dx = Tensor::empty({N, 2, 4}, DType::kFloat32, d);
    ops::rope_forward(x, x, pos, 2, 4, 10000.0f);
    ops::rope_backward(x, dx, pos, 2, 4, 10000.0f);
    return outputs(d, {x, dx});
  }});
  cases.push_back({"swiglu", [](Device d) {
    Tensor g = random_on(d, {N, O}, 24, -4, 4), u = random_on(d, {N, O}, 25);
    Tensor out = Tensor::empty({N, O}, DType::kFloat32, d), dout = random_on(d, {N, O}, 26);
    Tensor dg = Tensor::empty({N, O}, DType::kFloat32, d), du = Tensor::empty({N, O}, DType::kFloat32, d);
    ops::swiglu_forward(g, u, out);
    ops::swiglu_backward(dout, g, u, dg, du);
    return outputs(d, {out, dg, du});
  }});
  cases.push_back({"router", [](Device d) {
    Tensor z = random_on(d, {N, E}, 27, -3, 3), dp = random_on(d, {N, E}, 28);
    Tensor p = Tensor::empty({N, E}, DType::kFloat32, d), s = Tensor::empty({N, E}, DType::kFloat32, d);
    Tensor dz = Tensor::empty({N, E}, DType::kFloat32, d), ds = Tensor::empty({N, E}, DType::kFloat32, d);
    Tensor lse = Tensor::empty({N}, DType::kFloat32, d);
    ops::softmax_rows_forward(z, p);
    ops::softmax_rows_backward(dp, p, dz);
    ops::sigmoid_forward(z, s);
    ops::sigmoid_backward(dp, s, ds);
    ops::logsumexp_rows(z, lse);
    return outputs(d, {p, dz, s, ds, lse});
  }});
  // Routing on the device (tensor/router_math.h) in three modes: the forward, the balance
  // statistics per sequence and the backward with the balance and z losses and a dropped
  // assignment. idx and the float64 sums come back as values.
  cases.push_back({"routing", [](Device d) {
    const int64_t E8 = 8, groups = 2;
    const std::vector<int32_t> row_group = {0, 1, 1, 0, 1, 0};
    const std::vector<int32_t> counts32 = random_ints(groups * E8, 96, 0, 5);
    const std::vector<int64_t> counts(counts32.begin(), counts32.end());
    Tensor z = random_on(d, {N, E8}, 94, -3, 3), bias = random_on(d, {E8}, 95, -0.1f, 0.1f);
    std::vector<std::vector<float>> out;
    for (int mode = 0; mode < 3; ++mode) {
      RouterBackwardConfig b;
      RouterRowConfig& c = b.row;
      c.experts = E8;
      c.topk = mode == 2 ? 4 : 2;
      c.softmax = mode != 1;
      c.pre_softmax = mode == 2;
      c.num_groups = mode == 2 ? 4 : 0;
      c.group_topk = mode == 2 ? 2 : 0;
      c.scaling_factor = mode == 2 ? 2.5f : 1.0f;
      b.balance = true;
      b.balance_weight = 0.05;
      b.z_loss = mode != 1;
      b.z_factor = 0.02;
      b.z_tokens = 12.0;
      const int64_t k = c.topk;
      Tensor probs = Tensor::empty({N, E8}, DType::kFloat32, d);
      Tensor gates = Tensor::empty({N, k}, DType::kFloat32, d);
      Tensor lse = Tensor::empty({N}, DType::kFloat32, d);
      Tensor idx_words = Tensor::empty({N * k}, DType::kFloat32, d);  // int32 storage
      Tensor sum_words = Tensor::empty({2 * (groups * E8 + 1)}, DType::kFloat32, d);  // float64
      Tensor dgates = random_on(d, {N, k}, 97 + mode), dz = random_on(d, {N, E8}, 100 + mode);
      auto* idx = static_cast<int32_t*>(idx_words.raw_data());
      auto* sums = static_cast<double*>(sum_words.raw_data());
      std::vector<uint8_t> keep(N * k, 1);
      keep[3] = 0;
      ops::route_forward(z, mode == 1 ? bias : Tensor(), probs, idx, gates, lse, c);
      ops::route_load_sums(probs, lse, row_group, groups, sums, c);
      ops::route_backward(dgates, keep, gates, probs, z, idx, lse, counts, row_group, dz, b);
      for (auto& o : outputs(d, {probs, gates, lse, dz})) out.push_back(std::move(o));
      std::vector<int32_t> idx_host(N * k);
      std::vector<double> sums_host(groups * E8 + 1);
      ops::copy_memory(idx_host.data(), idx, sizeof(int32_t) * idx_host.size());
      ops::copy_memory(sums_host.data(), sums, sizeof(double) * sums_host.size());
      out.push_back(std::vector<float>(idx_host.begin(), idx_host.end()));
      out.push_back(std::vector<float>(sums_host.begin(), sums_host.end()));
    }
    return out;
  }});
  cases.push_back({"permute_combine", [](Device d) {
    const std::vector<int32_t> perm = {5, 0, 3, 11, 8, 1, 6};  // assignments t·K + j
    const int64_t R = static_cast<int64_t>(perm.size());
    Tensor x = random_on(d, {N, H}, 29), xs = Tensor::empty({R, H}, DType::kFloat32, d);
    Tensor gates = random_on(d, {N, K}, 30), out = random_on(d, {N, H}, 31);
    Tensor dx = random_on(d, {N, H}, 32), dys = Tensor::empty({R, H}, DType::kFloat32, d);
    Tensor dgates = Tensor::zeros({N, K}, DType::kFloat32, d);
    ops::permute_tokens(x, perm, xs, K);
    ops::combine_tokens(xs, perm, gates, out);
    ops::combine_tokens_backward(out, xs, perm, gates, dys, dgates);
    ops::permute_tokens_backward(dys, perm, dx, K);
    return outputs(d, {xs, out, dys, dgates, dx});
  }});
  cases.push_back({"embedding", [](Device d) {
    const std::vector<int32_t> tokens = random_ints(N, 33, 0, V);
    Tensor shard = random_on(d, {V / 2, H}, 34), out = Tensor::empty({N, H}, DType::kFloat32, d);
    Tensor dshard = random_on(d, {V / 2, H}, 35);
    ops::embedding_forward(tokens, shard, out, V, V / 2);
    ops::embedding_backward(out, tokens, dshard, V, V / 2);
    return outputs(d, {out, dshard});
  }});
  cases.push_back({"cross_entropy", [](Device d) {
    const std::vector<int32_t> labels = random_ints(N, 36, 0, V);
    const std::vector<float> mask = {1, 1, 0, 1, 1, 1};
    Tensor h = random_on(d, {N, H}, 37), w = random_on(d, {V, H}, 38);
    Tensor dh = Tensor::empty({N, H}, DType::kFloat32, d), dw = random_on(d, {V, H}, 39);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.5f, dh, dw, 4);
    // The vocabulary-parallel pieces on the logits of the second half of the vocabulary.
    Tensor z = Tensor::empty({N, V / 2}, DType::kFloat32, d);
    Tensor row_max = Tensor::empty({N}, DType::kFloat32, d);
    ops::linear_forward(h, w.slice_rows(V / 2, V), z);
    const Tensor sums = ops::float64_zeros(2 * N, d), shard_loss = ops::float64_zeros(1, d);
    ops::rows_max(z, row_max, N);
    ops::exp_shifted_rows(z, row_max, labels, mask, ops::float64_data(sums),
                          ops::float64_data(sums) + N, V / 2);
    ops::vocab_parallel_loss(row_max, ops::float64_data(sums), ops::float64_data(sums) + N, mask,
                             N, shard_loss);
    ops::softmax_gradient_rows(z, ops::float64_data(sums), labels, mask, 0.5f, V / 2);
    auto out = outputs(d, {dh, dw, z, row_max});
    out.push_back({static_cast<float>(loss)});
    for (double x : ops::float64_to_host(sums)) out.push_back({static_cast<float>(x)});
    out.push_back({static_cast<float>(ops::float64_to_host(shard_loss)[0])});
    return out;
  }});
  cases.push_back({"cross_entropy_bf16", [](Device d) {
    const std::vector<int32_t> labels = random_ints(N, 90, 0, V);
    const std::vector<float> mask = {1, 0, 1, 1, 1, 1};
    Tensor h = bf16_on(d, {N, H}, 91), w = bf16_on(d, {V, H}, 92);
    Tensor dh = Tensor::empty({N, H}, DType::kBFloat16, d), dw = random_on(d, {V, H}, 93);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.5f, dh, dw, 4);
    auto out = outputs(d, {dh, dw});
    out.push_back({static_cast<float>(loss)});
    return out;
  }});
  cases.push_back({"adamw", [](Device d) {
    // Tensors of one, several and no multi-tensor chunk (tensor/multi_tensor.h), each decayed
    // its own way.
    std::vector<ops::AdamWOperands> tensors;
    const std::vector<std::vector<int64_t>> shapes = {{N, H}, {70001}, {0}, {3}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      const uint32_t seed = 40 + 4 * static_cast<uint32_t>(i);
      tensors.push_back({random_on(d, shapes[i], seed), random_on(d, shapes[i], seed + 1),
                         random_on(d, shapes[i], seed + 2), random_on(d, shapes[i], seed + 3, 0, 1),
                         i % 2 == 0 ? 1e-4f : 0.0f});
    }
    ops::adamw_step(tensors, {0.9f, 0.95f, 1e-3f, 1.2f, 1e-8f, 0.0f});
    std::vector<std::vector<float>> out;
    for (const ops::AdamWOperands& t : tensors) {
      for (const Tensor& state : {t.param, t.exp_avg, t.exp_avg_sq}) {
        EXPECT_EQ(state.device(), d) << "an output left the op's device";
        out.push_back(state.to_vector());
      }
    }
    return out;
  }});
  cases.push_back({"small_ops", [](Device d) {
    Tensor y = random_on(d, {N, H}, 44), x = random_on(d, {N, H}, 45);
    ops::add(y, x);
    ops::axpy(y, -0.5f, x);
    ops::scale(y, 3.0f);
    Tensor f = Tensor::empty({5}, DType::kFloat32, d);
    ops::fill(f, 2.5f);
    Tensor rows = Tensor::zeros({4, 6}, DType::kFloat32, d);
    ops::copy_rows(rows.data() + 1, 6, x.data(), H, 4, 3);  // a (4,3) block at column 1
    // The same of 2-byte elements (the bf16 FSSDP gathers), a (4,3) block at column 2.
    Tensor xb = Tensor::empty({N, H}, DType::kBFloat16, d);
    Tensor rows_b = Tensor::zeros({4, 6}, DType::kBFloat16, d);
    ops::cast(xb, x);
    ops::copy_rows(static_cast<uint16_t*>(rows_b.raw_data()) + 2, 6, xb.raw_data(), H, 4, 3,
                   sizeof(uint16_t));
    Tensor rows_widened = Tensor::empty({4, 6}, DType::kFloat32, d);
    ops::cast(rows_widened, rows_b);
    auto out = outputs(d, {y, f, rows, rows_widened});
    out.push_back({static_cast<float>(ops::square_sum(y)), static_cast<float>(ops::sum(y))});
    return out;
  }});
  return cases;
}

TEST(BackendOps, EveryOpOnTheDeviceMatchesTheCpuBackend) {
  if (!testing::use_host_memory_device() && !has_backend(Device::kCuda)) {
    GTEST_SKIP() << "no second device";
  }
  const bool stand_in = backend_for(Device::kCuda).describe() == "host-memory stand-in device";
  const double tol = stand_in ? 0.0 : 2e-2;  // bf16-class tolerance on a real GPU
  for (const auto& [name, run] : op_cases()) {
    SCOPED_TRACE(name);
    const auto cpu = run(Device::kCpu);
    const auto device = run(Device::kCuda);
    ASSERT_EQ(cpu.size(), device.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      ASSERT_EQ(cpu[i].size(), device[i].size()) << "output " << i;
      for (size_t j = 0; j < cpu[i].size(); ++j) {
        if (device[i][j] == cpu[i][j]) continue;  // equal, infinities included
        ASSERT_NEAR(device[i][j], cpu[i][j], tol * (1.0 + std::abs(cpu[i][j])))
            << "output " << i << " [" << j << "]";
      }
    }
  }
}

TEST(BackendOps, OperandsOnDifferentDevicesAreABug) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 3}, DType::kFloat32, Device::kCuda);
  Tensor y = Tensor::zeros({2, 4});
  EXPECT_THROW(ops::linear_forward(x, w, y), InternalError);
}

TEST(BackendOps, DeviceMemoryIsCountedAndCopiesCrossDevices) {
  if (!testing::use_host_memory_device()) GTEST_SKIP() << "a real CUDA backend is registered";
  const int64_t before = MemoryStats::current_bytes();
  Tensor host = Tensor::from_vector({3}, {1.0f, 2.0f, 3.0f});
  Tensor device = ops::to_device(host, Device::kCuda);
  EXPECT_EQ(device.device(), Device::kCuda);
  EXPECT_EQ(device_of_pointer(device.data()), Device::kCuda);
  EXPECT_EQ(device_of_pointer(host.data()), Device::kCpu);
  EXPECT_EQ(MemoryStats::current_bytes() - before, 24);
  EXPECT_EQ(ops::to_host(device).to_vector(), host.to_vector());
  EXPECT_EQ(ops::to_host(host).raw_data(), host.raw_data()) << "no copy for host tensors";
  EXPECT_EQ(device.elements(1, {2}).to_vector(), (std::vector<float>{2.0f, 3.0f}));
}

// Small tensors read back together: the elements of each, in order, and nothing for none.
TEST(BackendOps, ToHostTogetherConcatenatesTheTensors) {
  const std::vector<Tensor> tensors = {Tensor::from_vector({2, 2}, {1, 2, 3, 4}),
                                       Tensor::from_vector({1}, {5}),
                                       Tensor::from_vector({0}, {}),
                                       Tensor::from_vector({2}, {6, 7})};
  EXPECT_EQ(ops::to_host_together(tensors), (std::vector<float>{1, 2, 3, 4, 5, 6, 7}));
  EXPECT_TRUE(ops::to_host_together({}).empty());
}

TEST(BackendOps, AMissingDeviceIsAClearError) {
  if (has_backend(Device::kCuda)) GTEST_SKIP() << "this process has a CUDA backend";
  try {
    backend_for(Device::kCuda);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no cuda backend"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moefold
