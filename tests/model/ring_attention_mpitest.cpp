// Ring attention (model/ring_attention.h) against single-process causal attention: CP = the world
// size, random q/k/v and output gradient drawn identically on every rank; each rank's shard of
// the output, log-sum-exp and dq/dk/dv must equal the single-process values at its positions,
// with the ring overlapped and not. A disabled benchmark times the two at CP = 2.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "model/context_shard.h"
#include "model/ring_attention.h"
#include "parallel/context.h"
#include "parallel/cp_communication.h"
#include "tensor/check.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

Tensor as_tensor(const std::vector<float>& values) {
  return Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
}

std::vector<float> random_values(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Rows of `full` (B,S,width) at this rank's positions: (B,Sl,width).
std::vector<float> shard_rows(const std::vector<float>& full, const std::vector<int32_t>& pos,
                              int64_t B, int64_t S, int64_t width) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b) {
    for (int32_t p : pos) {
      const float* row = full.data() + (b * S + p) * width;
      out.insert(out.end(), row, row + width);
    }
  }
  return out;
}

ParallelContext cp_context() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  ParallelConfig config;
  config.context_parallel_size = world;
  auto ctx = ParallelContext::create(config, MPI_COMM_WORLD);
  MOEFOLD_CHECK(ctx.ok(), ctx.status().message());
  return *ctx;
}

struct Case {
  int64_t B, chunk, nh, nkv, d;
};

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * (1.0f + std::fabs(want[i]))) << what << " [" << i << "]";
  }
}

void check_against_single_process(const Case& c, bool overlap) {
  ParallelContext ctx = cp_context();
  const int CP = ctx.coords.cp_size, rank = ctx.coords.cp_rank;
  const int64_t S = 2 * CP * c.chunk, Sl = S / CP, B = c.B;
  const int64_t qw = c.nh * c.d, kw = c.nkv * c.d;
  const std::vector<float> q = random_values(B * S * qw, 1), k = random_values(B * S * kw, 2),
                           v = random_values(B * S * kw, 3), dout = random_values(B * S * qw, 4);
  std::vector<int32_t> all(S);
  for (int64_t s = 0; s < S; ++s) all[s] = static_cast<int32_t>(s);
  // The one-process reference: plain causal attention over the whole sequences.
  const ops::AttentionShape whole{B, S, S, c.nh, c.nkv, c.d};
  const Tensor o_ref = Tensor::empty({B * S * qw}), lse_ref = Tensor::empty({B * c.nh * S});
  const Tensor dq_ref = Tensor::zeros({B * S * qw}), dk_ref = Tensor::zeros({B * S * kw}),
               dv_ref = Tensor::zeros({B * S * kw});
  ops::attention_forward(as_tensor(q), as_tensor(k), as_tensor(v), o_ref, lse_ref, all, all,
                         whole);
  ops::attention_backward(as_tensor(dout), as_tensor(q), as_tensor(k), as_tensor(v), o_ref,
                          lse_ref, dq_ref, dk_ref, dv_ref, all, all, whole);
  const std::vector<float> o = o_ref.to_vector(), lse = lse_ref.to_vector(),
                           dq = dq_ref.to_vector(), dk = dk_ref.to_vector(),
                           dv = dv_ref.to_vector();

  const std::vector<int32_t> pos = context_shard_positions(S, rank, CP);
  const std::vector<float> q_l = shard_rows(q, pos, B, S, qw), k_l = shard_rows(k, pos, B, S, kw),
                           v_l = shard_rows(v, pos, B, S, kw),
                           dout_l = shard_rows(dout, pos, B, S, qw);
  const RingAttentionDims dims{B, Sl, c.nh, c.nkv, c.d};
  const Tensor o_t = Tensor::empty({B * Sl * qw}), lse_t = Tensor::empty({B * c.nh * Sl});
  ring_attention_forward(*ctx.cp, dims, as_tensor(q_l), as_tensor(k_l), as_tensor(v_l), o_t,
                         lse_t, overlap);
  // dq/dk/dv accumulate: start from ones and subtract them afterwards.
  const Tensor dq_t = as_tensor(std::vector<float>(B * Sl * qw, 1.0f));
  const Tensor dk_t = as_tensor(std::vector<float>(B * Sl * kw, 1.0f));
  const Tensor dv_t = as_tensor(std::vector<float>(B * Sl * kw, 1.0f));
  ring_attention_backward(*ctx.cp, dims, as_tensor(dout_l), as_tensor(q_l), as_tensor(k_l),
                          as_tensor(v_l), o_t, lse_t, dq_t, dk_t, dv_t, overlap);
  const std::vector<float> o_l = o_t.to_vector(), lse_l = lse_t.to_vector();
  std::vector<float> dq_l = dq_t.to_vector(), dk_l = dk_t.to_vector(), dv_l = dv_t.to_vector();
  for (auto* grad : {&dq_l, &dk_l, &dv_l})
    for (float& x : *grad) x -= 1.0f;

  expect_close(o_l, shard_rows(o, pos, B, S, qw), 1e-5f, "o");
  // lse: ring layout (B,2,nh,C) against the single process's (B,nh,S).
  std::vector<float> lse_want;
  for (int64_t b = 0; b < B; ++b)
    for (int half = 0; half < 2; ++half)
      for (int64_t h = 0; h < c.nh; ++h)
        for (int64_t i = 0; i < c.chunk; ++i)
          lse_want.push_back(lse[(b * c.nh + h) * S + pos[half * c.chunk + i]]);
  expect_close(lse_l, lse_want, 1e-5f, "lse");
  expect_close(dq_l, shard_rows(dq, pos, B, S, qw), 2e-4f, "dq");
  expect_close(dk_l, shard_rows(dk, pos, B, S, kw), 2e-4f, "dk");
  expect_close(dv_l, shard_rows(dv, pos, B, S, kw), 2e-4f, "dv");
}

TEST(RingAttention, MatchesSingleProcessSmallChunks) {
  check_against_single_process({2, 5, 4, 2, 8}, true);
}

TEST(RingAttention, MatchesSingleProcessWithoutOverlap) {
  check_against_single_process({2, 5, 4, 2, 8}, false);
}

TEST(RingAttention, MatchesSingleProcessChunksLongerThanAKernelTile) {
  check_against_single_process({1, 136, 2, 1, 16}, true);
}

// Benchmark, not run by ctest (DISABLED_): forward + backward time of one attention layer at
// CP = world size, ring overlapped vs not, and the time blocked on the ring. E.g.
// mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 build/tests/model/ring_attention
//   --gtest_also_run_disabled_tests --gtest_filter='*Benchmark*'
TEST(RingAttentionBenchmark, DISABLED_OverlappedVersusNot) {
  ParallelContext ctx = cp_context();
  const int CP = ctx.coords.cp_size;
  const int64_t B = 1, S = 8192, Sl = S / CP, nh = 8, nkv = 8, d = 64;
  const RingAttentionDims dims{B, Sl, nh, nkv, d};
  const Tensor q = as_tensor(random_values(B * Sl * nh * d, 1 + ctx.coords.cp_rank)),
               k = as_tensor(random_values(B * Sl * nkv * d, 7)),
               v = as_tensor(random_values(B * Sl * nkv * d, 9));
  const Tensor o = Tensor::empty({q.numel()}), lse = Tensor::empty({B * nh * Sl});
  const Tensor dq = Tensor::zeros({q.numel()}), dk = Tensor::zeros({k.numel()}),
               dv = Tensor::zeros({v.numel()});
  for (bool overlap : {true, false, true, false}) {
    MPI_Barrier(MPI_COMM_WORLD);
    cp_communication_stats() = {};
    const auto start = std::chrono::steady_clock::now();
    ring_attention_forward(*ctx.cp, dims, q, k, v, o, lse, overlap);
    ring_attention_backward(*ctx.cp, dims, q, q, k, v, o, lse, dq, dk, dv, overlap);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (ctx.coords.cp_rank == 0) {
      std::printf("CP %d, S %lld, nh %lld, d %lld, overlap %d: fwd+bwd %.3f s, blocked on ring "
                  "%.3f s, compute %.3f s, %.1f MB sent\n",
                  CP, static_cast<long long>(S), static_cast<long long>(nh),
                  static_cast<long long>(d), overlap, seconds,
                  cp_communication_stats().wait_seconds, cp_communication_stats().compute_seconds,
                  cp_communication_stats().bytes_sent / 1e6);
    }
  }
}

}  // namespace
}  // namespace moefold
