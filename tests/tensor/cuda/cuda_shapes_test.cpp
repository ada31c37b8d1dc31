// The CUDA backend against the CPU backend at configs/gpu_bench.yaml's shapes (hidden 2048, 16
// heads of 128, 16 experts top-2 of width 1024, vocabulary 50304, sequences of 4096 tokens), cut
// where the CPU reference would be slow, in bf16 as the benchmark runs: the GEMMs (dense, mixed
// and grouped over uneven experts), bf16 attention over several query chunks and a ring step
// whose first chunk sees no key, the bf16 layers and token gathers, cross-entropy over the full
// vocabulary, and the router, optimizer and memory ops. Then every op on empty inputs (no
// zero-size launches, outputs untouched).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/backend.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/tensor/cuda/device_compare.h"

namespace moefold {
namespace {

using testing::bf16_on;
using testing::expect_devices_agree;
using testing::host;
using testing::Outputs;
using testing::random_ints;
using testing::random_on;

constexpr double kBf16Tol = 2e-2;  // one bf16 rounding of a sum, relative to 1 + |value|
constexpr double kFloatTol = 1e-4;

Tensor f32_empty(std::vector<int64_t> shape, Device d) {
  return Tensor::empty(std::move(shape), DType::kFloat32, d);
}
Tensor bf16_empty(std::vector<int64_t> shape, Device d) {
  return Tensor::empty(std::move(shape), DType::kBFloat16, d);
}

// The backward GEMMs take their own dy rather than the forward's y: a chain passes on each
// link's rounding, which the CPU and the device do in different orders, and a result near zero
// by cancellation then carries the error of the large terms (a bf16 y one ulp apart moves a dx
// of 0.5 by 0.03, past the tolerance).

// Expert offsets of G groups over uneven row counts, two of them empty: the MoE's grouped GEMMs.
std::vector<int64_t> expert_offsets(int64_t G, int64_t max_rows, uint32_t seed) {
  const std::vector<int32_t> counts = random_ints(G, seed, 1, static_cast<int32_t>(max_rows));
  std::vector<int64_t> offsets = {0};
  for (int64_t g = 0; g < G; ++g) {
    offsets.push_back(offsets.back() + (g == 3 || g == G - 1 ? 0 : counts[g]));
  }
  return offsets;
}

TEST(CudaShapes, DenseGemmsMatchCpu) {
  expect_devices_agree([](Device d) {
    const int64_t N = 1000, I = 2048, O = 1536;  // rows not a multiple of 8
    Tensor x = bf16_on(d, {N, I}, 1), w = bf16_on(d, {O, I}, 2), y = bf16_on(d, {N, O}, 3);
    Tensor dy = bf16_on(d, {N, O}, 33);
    Tensor dx = bf16_empty({N, I}, d), dw = random_on(d, {O, I}, 4);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, false);
    ops::linear_backward_dw(dy, x, dw);
    // The mixes a device widens: bf16 activations on float32 weights, and a bf16 output of
    // float32 operands.
    Tensor w32 = random_on(d, {O, I}, 5), x32 = random_on(d, {N, I}, 6);
    Tensor y32 = f32_empty({N, O}, d), y16 = bf16_on(d, {N, O}, 7);
    ops::linear_forward(x, w32, y32, false);
    ops::linear_forward(x32, w32, y16, true);
    return host({y, dx, dw, y32, y16});
  }, kBf16Tol);
  expect_devices_agree([](Device d) {
    const int64_t N = 333, I = 512, O = 384;
    Tensor x = random_on(d, {N, I}, 8), w = random_on(d, {O, I}, 9), y = random_on(d, {N, O}, 10);
    Tensor dy = random_on(d, {N, O}, 34);
    Tensor dx = random_on(d, {N, I}, 11), dw = random_on(d, {O, I}, 12);
    ops::linear_forward(x, w, y, true);
    ops::linear_backward_dx(dy, w, dx, true);
    ops::linear_backward_dw(dy, x, dw);
    return host({y, dx, dw});
  }, kFloatTol);
}

TEST(CudaShapes, GroupedExpertGemmsMatchCpu) {
  expect_devices_agree([](Device d) {
    const int64_t G = 16, I = 2048, O = 1024;
    const std::vector<int64_t> offsets = expert_offsets(G, 300, 13);
    const int64_t R = offsets.back();
    Tensor x = bf16_on(d, {R, I}, 14), w = bf16_on(d, {G, O, I}, 15);
    Tensor y = bf16_empty({R, O}, d), dy = bf16_on(d, {R, O}, 35), dx = bf16_on(d, {R, I}, 16);
    Tensor dw = random_on(d, {G, O, I}, 17);
    ops::grouped_linear_forward(x, w, y, offsets);
    ops::grouped_linear_backward_dx(dy, w, dx, offsets, true);
    ops::grouped_linear_backward_dw(dy, x, dw, offsets);
    return host({y, dx, dw});
  }, kBf16Tol);
  expect_devices_agree([](Device d) {
    const int64_t G = 8, I = 256, O = 192;
    const std::vector<int64_t> offsets = expert_offsets(G, 300, 18);
    const int64_t R = offsets.back();
    Tensor x = random_on(d, {R, I}, 19), w = random_on(d, {G, O, I}, 20);
    Tensor y = f32_empty({R, O}, d), dy = random_on(d, {R, O}, 36), dx = f32_empty({R, I}, d);
    Tensor dw = random_on(d, {G, O, I}, 21);
    ops::grouped_linear_forward(x, w, y, offsets);
    ops::grouped_linear_backward_dx(dy, w, dx, offsets, false);
    ops::grouped_linear_backward_dw(dy, x, dw, offsets);
    return host({y, dx, dw});
  }, kFloatTol);
}

// Causal self-attention over 1,100 queries (18 flash tiles, or three chunks of at most 512 on
// the chunked path, the last partial either way), and a context-parallel ring step whose keys
// come later than the first 512 queries: those see no key (lse −inf, zero output, no gradient),
// the next see a prefix. Both bf16 paths.
TEST(CudaShapes, AttentionOverChunksAndRingStepsMatchesCpu) {
  struct Case {
    int64_t Sq, Skv;
    int32_t first_key;
  };
  for (const Case c : {Case{1100, 1100, 0}, Case{600, 700, 520}}) {
    SCOPED_TRACE(c.Sq);
    const int64_t B = 1, nh = 4, nkv = 2, hd = 128;
    const ops::AttentionShape s{B, c.Sq, c.Skv, nh, nkv, hd};
    std::vector<int32_t> q_pos(c.Sq), k_pos(c.Skv);
    for (int64_t i = 0; i < c.Sq; ++i) q_pos[i] = static_cast<int32_t>(i);
    for (int64_t j = 0; j < c.Skv; ++j) k_pos[j] = c.first_key + static_cast<int32_t>(j);
    for (bool flash : {true, false}) {
      SCOPED_TRACE(flash ? "flash" : "chunked");
      const testing::FlashAttentionScope scope(flash);
      expect_devices_agree([&](Device d) {
        Tensor q = bf16_on(d, {B, c.Sq, nh, hd}, 22), k = bf16_on(d, {B, c.Skv, nkv, hd}, 23);
        Tensor v = bf16_on(d, {B, c.Skv, nkv, hd}, 24), dout = bf16_on(d, q.shape(), 25);
        Tensor o = bf16_empty(q.shape(), d), lse = f32_empty({B, nh, c.Sq}, d);
        Tensor dq = bf16_on(d, q.shape(), 26), dk = bf16_on(d, k.shape(), 27);
        Tensor dv = bf16_on(d, v.shape(), 28);
        ops::attention_forward(q, k, v, o, lse, q_pos, k_pos, s);
        ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, q_pos, k_pos, s);
        return host({o, lse, dq, dk, dv});
      }, kBf16Tol);
    }
    if (c.first_key == 0) continue;
    // The float32 kernels on the ring step, then its merge into a partial result.
    expect_devices_agree([&](Device d) {
      Tensor q = random_on(d, {B, c.Sq, nh, hd}, 29), k = random_on(d, {B, c.Skv, nkv, hd}, 30);
      Tensor v = random_on(d, {B, c.Skv, nkv, hd}, 31), dout = random_on(d, q.shape(), 32);
      Tensor o = f32_empty(q.shape(), d), lse = f32_empty({B, nh, c.Sq}, d);
      Tensor dq = Tensor::zeros(q.shape(), DType::kFloat32, d);
      Tensor dk = Tensor::zeros(k.shape(), DType::kFloat32, d);
      Tensor dv = Tensor::zeros(v.shape(), DType::kFloat32, d);
      ops::attention_forward(q, k, v, o, lse, q_pos, k_pos, s);
      ops::attention_backward(dout, q, k, v, o, lse, dq, dk, dv, q_pos, k_pos, s);
      Tensor o_a = random_on(d, q.shape(), 33), lse_a = random_on(d, lse.shape(), 34);
      ops::attention_merge(o_a, lse_a, o, lse, s);
      return host({o, lse, dq, dk, dv, o_a, lse_a});
    }, kFloatTol);
  }
}

// One sequence of 4,096 tokens through the bf16 layers: RMSNorm over hidden 2048, RoPE on 16
// heads of 128 at positions up to 4095 (in place too), SwiGLU over the expert width, residuals.
TEST(CudaShapes, Bf16LayersOverASequenceMatchCpu) {
  expect_devices_agree([](Device d) {
    const int64_t N = 4096, H = 2048, heads = 16, hd = 128, F = 1024;
    std::vector<int32_t> pos(N);
    for (int64_t n = 0; n < N; ++n) pos[n] = static_cast<int32_t>(n);
    Tensor x = bf16_on(d, {N, H}, 35), w = bf16_on(d, {H}, 36), y = bf16_empty({N, H}, d);
    Tensor rstd = f32_empty({N}, d), dx = bf16_on(d, {N, H}, 37), dw = random_on(d, {H}, 38);
    ops::rmsnorm_forward(x, w, y, rstd, 1e-5f);
    ops::rmsnorm_backward(y, x, w, rstd, dx, dw, true);
    Tensor r = bf16_on(d, {N, heads, hd}, 39), r_out = bf16_empty({N, heads, hd}, d);
    ops::rope_forward(r, r_out, pos, heads, hd, 10000.0f);
    ops::rope_backward(r_out, r, pos, heads, hd, 10000.0f);
    Tensor g = bf16_on(d, {N, F}, 40), u = bf16_on(d, {N, F}, 41), s = bf16_empty({N, F}, d);
    Tensor dg = bf16_empty({N, F}, d), du = bf16_empty({N, F}, d);
    ops::swiglu_forward(g, u, s);
    ops::swiglu_backward(s, g, u, dg, du);
    ops::add(y, x);
    ops::axpy(y, -0.75f, dx);
    return host({y, rstd, dx, dw, r_out, r, s, dg, du});
  }, kBf16Tol);
}

// The MoE's token gathers in bf16 (4,096 tokens top-2 over 16 experts, every eleventh choice
// dropped), and the embedding's second vocabulary half with repeated tokens.
TEST(CudaShapes, Bf16TokenGathersMatchCpu) {
  expect_devices_agree([](Device d) {
    const int64_t N = 4096, K = 2, E = 16, H = 2048, V = 50304, He = 512;
    const std::vector<int32_t> experts = random_ints(N * K, 42, 0, E);
    std::vector<int32_t> perm;
    for (int32_t e = 0; e < E; ++e) {
      for (int32_t a = 0; a < N * K; ++a) {
        if (experts[a] == e && a % 11 != 5) perm.push_back(a);
      }
    }
    const int64_t R = static_cast<int64_t>(perm.size());
    Tensor x = bf16_on(d, {N, H}, 43), xs = bf16_empty({R, H}, d);
    Tensor gates = random_on(d, {N, K}, 44), out = bf16_on(d, {N, H}, 45);
    Tensor dys = bf16_empty({R, H}, d), dgates = random_on(d, {N, K}, 46);
    Tensor dx = bf16_on(d, {N, H}, 47);
    ops::permute_tokens(x, perm, xs, K);
    ops::combine_tokens(xs, perm, gates, out);
    ops::combine_tokens_backward(out, xs, perm, gates, dys, dgates);
    ops::permute_tokens_backward(dys, perm, dx, K);
    const std::vector<int32_t> tokens = random_ints(N, 48, 0, V);
    Tensor table = bf16_on(d, {V / 2, He}, 49), emb = bf16_empty({N, He}, d);
    Tensor dtable = random_on(d, {V / 2, He}, 50);
    ops::embedding_forward(tokens, table, emb, V, V / 2);
    ops::embedding_backward(emb, tokens, dtable, V, V / 2);
    return host({xs, out, dys, dgates, dx, emb, dtable});
  }, kBf16Tol);
}

// Rows of the full 50,304-entry vocabulary (block reductions over long rows) in three chunks,
// float32 and bf16, and the vocabulary-parallel pieces on the second half of the vocabulary.
TEST(CudaShapes, CrossEntropyOverTheVocabularyMatchesCpu) {
  const int64_t N = 96, H = 64, V = 50304, first = V / 2;
  const std::vector<int32_t> labels = random_ints(N, 51, 0, static_cast<int32_t>(V));
  std::vector<float> mask(N, 1.0f);
  for (int64_t n = 0; n < N; n += 7) mask[n] = 0.0f;
  expect_devices_agree([&](Device d) {
    Tensor h = random_on(d, {N, H}, 52), w = random_on(d, {V, H}, 53, -0.3f, 0.3f);
    Tensor dh = f32_empty({N, H}, d), dw = random_on(d, {V, H}, 54);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.25f, dh, dw, 40);
    Tensor z = f32_empty({N, V - first}, d);
    ops::linear_forward(h, w.slice_rows(first, V), z);
    Tensor row_max = f32_empty({N}, d);
    const Tensor sums = ops::float64_zeros(2 * N, d), shard_loss = ops::float64_zeros(1, d);
    double* label_logit = ops::float64_data(sums) + N;
    ops::rows_max(z, row_max, N);
    ops::exp_shifted_rows(z, row_max, labels, mask, ops::float64_data(sums), label_logit, first);
    ops::vocab_parallel_loss(row_max, ops::float64_data(sums), label_logit, mask, N, shard_loss);
    ops::softmax_gradient_rows(z, ops::float64_data(sums), labels, mask, 0.25f, first);
    Outputs out = host({dh, dw, z, row_max});
    out.push_back({static_cast<float>(loss)});
    for (double x : ops::float64_to_host(sums)) out.push_back({static_cast<float>(x)});
    out.push_back({static_cast<float>(ops::float64_to_host(shard_loss)[0])});
    return out;
  }, kFloatTol);
  expect_devices_agree([&](Device d) {
    Tensor h = bf16_on(d, {N, H}, 55), w = bf16_on(d, {V, H}, 56);
    Tensor dh = bf16_empty({N, H}, d), dw = random_on(d, {V, H}, 57);
    const double loss = ops::cross_entropy_forward_backward(h, w, labels, mask, 0.25f, dh, dw, 40);
    Outputs out = host({dh, dw});
    out.push_back({static_cast<float>(loss)});
    return out;
  }, kBf16Tol);
}

// Router rows of 16 experts (fewer than a warp's lanes), AdamW and the reductions and copies
// over millions of elements, a gradient norm over several tensors (one empty).
TEST(CudaShapes, RouterOptimizerAndMemoryOpsMatchCpu) {
  expect_devices_agree([](Device d) {
    const int64_t T = 8192, E = 16, n = 5'000'003;
    Tensor z = random_on(d, {T, E}, 58, -4, 4), dp = random_on(d, {T, E}, 59);
    Tensor p = f32_empty({T, E}, d), dz = f32_empty({T, E}, d), s = f32_empty({T, E}, d);
    Tensor ds = f32_empty({T, E}, d), lse = f32_empty({T}, d);
    ops::softmax_rows_forward(z, p);
    ops::softmax_rows_backward(dp, p, dz);
    ops::sigmoid_forward(z, s);
    ops::sigmoid_backward(dp, s, ds);
    ops::logsumexp_rows(z, lse);
    Tensor param = random_on(d, {n}, 60), grad = random_on(d, {n}, 61);
    Tensor m = random_on(d, {n}, 62), v = random_on(d, {n}, 63, 0, 1);
    const ops::AdamWOperands adam{param, grad, m, v, 3e-5f};
    ops::adamw_step({&adam, 1}, {0.9f, 0.95f, 3e-4f, 1.1f, 1e-8f, 0.0f});
    ops::scale(grad, -0.5f);
    // Casts of values equal on both devices (a computed value one float ulp apart could round
    // to the neighbouring bf16).
    Tensor narrow = bf16_empty({n}, d), wide = f32_empty({n}, d);
    ops::cast(narrow, grad);
    ops::cast(wide, narrow);
    // A (4096, 1000) block of bf16 rows between different strides, and of float32 ones.
    Tensor rows16 = Tensor::zeros({4096, 1536}, DType::kBFloat16, d);
    Tensor src16 = bf16_on(d, {4096, 2048}, 64);
    ops::copy_rows(static_cast<uint16_t*>(rows16.raw_data()) + 7, 1536, src16.raw_data(), 2048,
                   4096, 1000, sizeof(uint16_t));
    Tensor rows32 = Tensor::zeros({2048, 1536}, DType::kFloat32, d);
    ops::copy_rows(rows32.data() + 3, 1536, param.data(), 2000, 2048, 1500);
    // Device-to-device copies: a whole tensor, and raw memory between interior pointers.
    Tensor m_copy = f32_empty({n}, d);
    ops::copy(m_copy, m);
    ops::copy_memory(m_copy.data() + 11, v.data() + 1'000'000, sizeof(float) * 2'000'000);
    Tensor none = f32_empty({0}, d);
    const double norm = ops::square_sum_total({param, none, grad, lse});
    Outputs out = host({p, dz, s, ds, lse, param, m, v, grad, wide, rows16, rows32, m_copy});
    out.push_back({static_cast<float>(norm), static_cast<float>(ops::sum(m))});
    return out;
  }, kFloatTol);
}

// Every op on empty inputs (no tokens, rows, keys or heads): nothing is launched with an empty
// grid, outputs that are defined for them are written (no key: zero output and lse −inf; dw of
// no rows: unchanged) and the others stay untouched.
TEST(CudaShapes, EmptyInputsAreNoOps) {
  expect_devices_agree([](Device d) {
    const int64_t H = 64, E = 8;
    const std::vector<int32_t> none;
    Tensor x0 = f32_empty({0, H}, d), w = random_on(d, {H}, 65), dw = random_on(d, {H}, 66);
    Tensor rstd0 = f32_empty({0}, d);
    ops::rmsnorm_forward(x0, w, x0, rstd0, 1e-5f);
    ops::rmsnorm_backward(x0, x0, w, rstd0, x0, dw, true);
    Tensor w0 = f32_empty({0}, d);
    ops::rope_forward(x0.view({0, 4, 16}), x0.view({0, 4, 16}), none, 4, 16, 1e4f);
    ops::swiglu_forward(x0, x0, x0);
    ops::swiglu_backward(x0, x0, x0, x0, x0);
    Tensor z0 = f32_empty({0, E}, d), lse0 = f32_empty({0}, d);
    ops::softmax_rows_forward(z0, z0);
    ops::softmax_rows_backward(z0, z0, z0);
    ops::sigmoid_forward(z0, z0);
    ops::logsumexp_rows(z0, lse0);
    RouterBackwardConfig router;
    router.row.experts = static_cast<int32_t>(E);
    router.row.topk = 2;
    router.balance = router.z_loss = true;
    const std::vector<int64_t> counts(2 * E, 3);
    Tensor gates0 = f32_empty({0, 2}, d);
    Tensor sum_words = random_on(d, {2 * (2 * E + 1)}, 83);  // float64 load sums
    auto* sums = static_cast<double*>(sum_words.raw_data());
    ops::route_forward(z0, Tensor(), z0, nullptr, gates0, lse0, router.row);
    ops::route_load_sums(z0, lse0, none, 2, sums, router.row);
    ops::route_backward(gates0, {}, gates0, z0, z0, nullptr, lse0, counts, none, z0, router);
    std::vector<double> sums_host(2 * E + 1);
    ops::copy_memory(sums_host.data(), sums, sizeof(double) * sums_host.size());
    ops::permute_tokens(x0, std::vector<int32_t>{}, x0, 2);
    Tensor out = random_on(d, {3, H}, 68), gates = random_on(d, {3, 2}, 69);
    Tensor dgates = random_on(d, {3, 2}, 70);
    ops::combine_tokens(x0, std::vector<int32_t>{}, gates, out);
    ops::permute_tokens_backward(x0, std::vector<int32_t>{}, out, 2);
    ops::combine_tokens_backward(out, x0, std::vector<int32_t>{}, gates, x0, dgates);
    Tensor table = random_on(d, {10, H}, 71);
    ops::embedding_forward(none, table, x0, 20, 10);
    ops::embedding_backward(x0, none, table, 20, 10);
    const double loss = ops::cross_entropy_forward_backward(x0, random_on(d, {50, H}, 72), none,
                                                            {}, 1.0f, x0, Tensor(), 16);
    const ops::AdamWOperands adam{w0, w0, w0, w0, 0.0f};
    ops::adamw_step({&adam, 1}, {0.9f, 0.95f, 1e-3f, 1.0f, 1e-8f, 0.0f});
    ops::fill(w0, 1.0f);
    ops::axpy(w0, 2.0f, w0);
    ops::scale(w0, 2.0f);
    // GEMMs with no rows, and over experts that all have none.
    Tensor w_lin = random_on(d, {7, H}, 73);
    ops::linear_forward(x0, w_lin, f32_empty({0, 7}, d), false);
    ops::linear_backward_dw(f32_empty({0, 7}, d), x0, w_lin);
    const std::vector<int64_t> empty_groups = {0, 0, 0};
    ops::grouped_linear_forward(x0, random_on(d, {2, 7, H}, 76), f32_empty({0, 7}, d),
                                empty_groups);
    // Attention with no queries, and with queries but no keys.
    const std::vector<int32_t> q_pos = {0, 1, 2};
    Tensor q = random_on(d, {1, 3, 2, 16}, 77), kv0 = f32_empty({1, 0, 2, 16}, d);
    Tensor o = random_on(d, {1, 3, 2, 16}, 78), lse = random_on(d, {1, 2, 3}, 79);
    ops::attention_forward(q, kv0, kv0, o, lse, q_pos, none, {1, 3, 0, 2, 2, 16});
    Tensor q16 = bf16_on(d, {1, 3, 2, 16}, 80), kv16 = bf16_empty({1, 0, 2, 16}, d);
    Tensor o16 = bf16_on(d, {1, 3, 2, 16}, 81), lse16 = random_on(d, {1, 2, 3}, 82);
    ops::attention_forward(q16, kv16, kv16, o16, lse16, q_pos, none, {1, 3, 0, 2, 2, 16});
    Tensor q0 = f32_empty({1, 0, 2, 16}, d), lse_q0 = f32_empty({1, 2, 0}, d);
    ops::attention_forward(q0, q0, q0, q0, lse_q0, none, none, {1, 0, 0, 2, 2, 16});
    Tensor no_heads = f32_empty({1, 3, 0, 16}, d), kv = random_on(d, {1, 3, 1, 16}, 67);
    Tensor lse_no_heads = f32_empty({1, 0, 3}, d), dkv = random_on(d, {1, 3, 1, 16}, 84);
    const ops::AttentionShape headless{1, 3, 3, 0, 1, 16};
    ops::attention_forward(no_heads, kv, kv, no_heads, lse_no_heads, q_pos, q_pos, headless);
    ops::attention_backward(no_heads, no_heads, kv, kv, no_heads, lse_no_heads, no_heads, dkv,
                            dkv, q_pos, q_pos, headless);
    Outputs result = host({dw, out, dgates, table, w_lin, o, lse, o16, lse16, dkv});
    result.push_back({static_cast<float>(loss), static_cast<float>(ops::sum(w0)),
                      static_cast<float>(ops::square_sum(x0))});
    result.emplace_back(sums_host.begin(), sums_host.end());
    return result;
  }, 0.0);
}

}  // namespace
}  // namespace moefold
