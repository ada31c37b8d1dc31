// Load balancing against MODEL.md, formula by formula: the routing and both balance losses and
// the z-loss against a float64 reference written from the page, hand-worked values, each loss's
// gradient on its own against finite differences, a hand-worked micro-batch whose kept sets under
// both drop policies are known (router and MoE layer output), padding that changes no number, and
// the expert-bias update.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>

#include "gradient_check.h"
#include "model/moe_layer.h"
#include "model/router.h"

namespace moefold {
namespace {

using testing::close;
using testing::numeric_derivative;
using testing::random_vector;

// A router whose logits are its input: H = E and Wr = I.
struct IdentityRouter {
  ModelConfig config;
  ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  std::unique_ptr<Router> router;
  RouterStash stash;
  Tensor z;

  explicit IdentityRouter(const MoeConfig& moe) {
    config.hidden_size = moe.num_experts;
    config.moe = moe;
    router = std::make_unique<Router>(config, ctx, 0, registry);
    registry.init(1);
    const int E = moe.num_experts;
    float* w = router->weight()->value.data();
    for (int i = 0; i < E * E; ++i) w[i] = (i / E == i % E) ? 1.0f : 0.0f;
  }
  void route(const std::vector<float>& logits, int batch, int seq) {
    z = Tensor::from_vector({static_cast<int64_t>(batch) * seq, config.hidden_size}, logits);
    router->forward(z, batch, seq, stash);
  }
};

MoeConfig moe_config(int experts, int topk, LoadBalancingType type, float coeff) {
  MoeConfig moe;
  moe.num_experts = experts;
  moe.moe_ffn_hidden_size = 4;
  moe.moe_router_topk = topk;
  moe.moe_router_load_balancing_type = type;
  moe.moe_aux_loss_coeff = coeff;
  return moe;
}

// ---- float64 reference of MODEL.md "The MoE layer" (routing) and "Losses of one micro-batch".

struct Reference {
  std::vector<int> idx;                // (N,k)
  std::vector<double> gates;           // (N,k)
  std::vector<int64_t> counts;         // (E)
  std::vector<int64_t> seq_counts;     // (B,E)
  double aux = 0, seq_aux = 0, z = 0;  // coefficients applied
};

std::vector<int> topk_lower_index_first(const std::vector<double>& r, int k) {
  std::vector<int> order(r.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return r[a] > r[b]; });
  order.resize(k);
  return order;
}

// The balance-loss formula coeff·E/(k·T²)·Σ_e (Σ_t P[t,e])·c_e over tokens [begin, end).
double balance_loss(const std::vector<std::vector<double>>& P, const std::vector<int64_t>& c,
                    int begin, int end, int E, int k, double coeff) {
  double total = 0;
  for (int e = 0; e < E; ++e) {
    double column = 0;
    for (int t = begin; t < end; ++t) column += P[t][e];
    total += column * c[e];
  }
  const double T = end - begin;
  return coeff * E / (k * T * T) * total;
}

Reference reference(const MoeConfig& moe, const std::vector<float>& z, const std::vector<float>& b,
                    int B, int S) {
  const int E = moe.num_experts, k = moe.moe_router_topk, N = B * S;
  const bool softmax = moe.moe_router_score_function == RouterScoreFunction::kSoftmax;
  Reference ref;
  ref.counts.assign(E, 0);
  ref.seq_counts.assign(B * E, 0);
  std::vector<std::vector<double>> P(N, std::vector<double>(E));
  double z_sum = 0;
  for (int t = 0; t < N; ++t) {
    std::vector<double> zt(z.begin() + t * E, z.begin() + (t + 1) * E), score(E), r(E);
    const double mx = *std::max_element(zt.begin(), zt.end());
    double sum_exp = 0, sum_score = 0;
    for (double v : zt) sum_exp += std::exp(v - mx);
    const double lse = mx + std::log(sum_exp);
    z_sum += lse * lse;
    for (int e = 0; e < E; ++e) {
      score[e] = softmax ? std::exp(zt[e] - lse) : 1 / (1 + std::exp(-zt[e]));
      sum_score += score[e];
      r[e] = score[e] + (b.empty() ? 0.0 : b[e]);
    }
    for (int e = 0; e < E; ++e) P[t][e] = softmax ? score[e] : score[e] / sum_score;
    const int G = moe.moe_router_num_groups;
    if (G > 0) {
      const int size = E / G, per_group = k / moe.moe_router_group_topk;
      std::vector<double> group_score(G, 0.0);
      for (int g = 0; g < G; ++g) {
        std::vector<double> members(r.begin() + g * size, r.begin() + (g + 1) * size);
        for (int m : topk_lower_index_first(members, per_group)) group_score[g] += members[m];
      }
      const std::vector<int> kept = topk_lower_index_first(group_score, moe.moe_router_group_topk);
      for (int e = 0; e < E; ++e) {
        if (std::find(kept.begin(), kept.end(), e / size) == kept.end()) {
          r[e] = -std::numeric_limits<double>::infinity();
        }
      }
    }
    const std::vector<int> idx = topk_lower_index_first(r, k);
    double gate_norm = 0;
    for (int e : idx)
      gate_norm += softmax && !moe.moe_router_pre_softmax ? std::exp(zt[e]) : score[e];
    const bool normalise = (softmax && !moe.moe_router_pre_softmax) || (!softmax && k > 1);
    const double sf =
        moe.moe_router_topk_scaling_factor != 0 ? moe.moe_router_topk_scaling_factor : 1;
    for (int e : idx) {
      const double raw = softmax && !moe.moe_router_pre_softmax ? std::exp(zt[e]) : score[e];
      ref.idx.push_back(e);
      ref.gates.push_back(sf * (normalise ? raw / gate_norm : raw));
      ++ref.counts[e];
      ++ref.seq_counts[(t / S) * E + e];
    }
  }
  ref.aux = balance_loss(P, ref.counts, 0, N, E, k, moe.moe_aux_loss_coeff);
  for (int s = 0; s < B; ++s) {
    const std::vector<int64_t> c(ref.seq_counts.begin() + s * E,
                                 ref.seq_counts.begin() + (s + 1) * E);
    ref.seq_aux += balance_loss(P, c, s * S, (s + 1) * S, E, k, moe.moe_aux_loss_coeff) / B;
  }
  ref.z = moe.moe_z_loss_coeff * z_sum / N;
  return ref;
}

void expect_matches_reference(const MoeConfig& moe, int B, int S, uint32_t seed) {
  IdentityRouter h(moe);
  const int E = moe.num_experts, N = B * S;
  std::vector<float> bias;
  if (h.router->expert_bias() != nullptr) {
    bias = random_vector(E, seed + 100, 0.2f);
    std::copy(bias.begin(), bias.end(), h.router->expert_bias()->value.data());
  }
  const std::vector<float> z = random_vector(N * E, seed, 1.5f);
  h.route(z, B, S);
  const Reference ref = reference(moe, z, bias, B, S);
  ASSERT_EQ(h.stash.idx, std::vector<int32_t>(ref.idx.begin(), ref.idx.end()));
  const std::vector<float> gates = h.stash.gates.to_vector();
  for (size_t i = 0; i < gates.size(); ++i) EXPECT_NEAR(gates[i], ref.gates[i], 1e-6) << i;
  EXPECT_EQ(h.stash.counts, ref.counts);
  const bool per_seq = moe.moe_router_load_balancing_type == LoadBalancingType::kSeqAuxLoss;
  const double aux = moe.moe_router_load_balancing_type == LoadBalancingType::kNone ? 0.0
                     : per_seq                                                      ? ref.seq_aux
                                                                                    : ref.aux;
  EXPECT_TRUE(close(h.stash.aux_loss, aux, 1e-5, 1e-9)) << h.stash.aux_loss << " vs " << aux;
  EXPECT_TRUE(close(h.stash.z_loss, ref.z, 1e-5, 1e-9)) << h.stash.z_loss << " vs " << ref.z;
  EXPECT_GT(aux + ref.z, 0.0);
}

TEST(BalanceReference, SoftmaxAuxLossTopTwo) {
  MoeConfig moe = moe_config(6, 2, LoadBalancingType::kAuxLoss, 0.37f);
  moe.moe_z_loss_coeff = 0.013f;
  expect_matches_reference(moe, 3, 5, 1);
}

TEST(BalanceReference, SoftmaxPreSeqAuxLossTopThree) {
  MoeConfig moe = moe_config(8, 3, LoadBalancingType::kSeqAuxLoss, 0.21f);
  moe.moe_router_pre_softmax = true;
  moe.moe_z_loss_coeff = 0.002f;
  expect_matches_reference(moe, 4, 3, 2);
}

TEST(BalanceReference, SigmoidBiasAuxLossScaled) {
  MoeConfig moe = moe_config(8, 2, LoadBalancingType::kAuxLoss, 0.5f);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_enable_expert_bias = true;
  moe.moe_router_topk_scaling_factor = 1.7f;
  expect_matches_reference(moe, 2, 7, 3);
}

TEST(BalanceReference, SigmoidSeqAuxLossGroupLimited) {
  MoeConfig moe = moe_config(8, 4, LoadBalancingType::kSeqAuxLoss, 0.5f);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  moe.moe_router_enable_expert_bias = true;
  moe.moe_router_num_groups = 4;
  moe.moe_router_group_topk = 2;
  moe.moe_z_loss_coeff = 0.01f;
  expect_matches_reference(moe, 3, 4, 4);
}

TEST(BalanceReference, NoBalanceLossOnlyZLoss) {
  MoeConfig moe = moe_config(4, 1, LoadBalancingType::kNone, 0.5f);
  moe.moe_z_loss_coeff = 0.1f;
  expect_matches_reference(moe, 2, 3, 5);
}

// ---- hand-worked values.

TEST(BalanceHandWorked, AuxLossTopTwoDividesByK) {
  // E = 3, k = 2, N = 2. P = [.25 .5 .25] → idx {1, 0} (0 and 2 tie, 0 wins);
  // P = [.25 .25 .5] → idx {2, 0}. c = [2, 1, 1], Σ_t P = [.5, .75, .75], Σ_e = 2.5.
  // aux = 0.1 · 3 / (2 · 2²) · 2.5 = 0.09375.
  IdentityRouter h(moe_config(3, 2, LoadBalancingType::kAuxLoss, 0.1f));
  h.route({0, std::log(2.0f), 0, 0, 0, std::log(2.0f)}, 1, 2);
  EXPECT_EQ(h.stash.idx, (std::vector<int32_t>{1, 0, 2, 0}));
  EXPECT_EQ(h.stash.counts, (std::vector<int64_t>{2, 1, 1}));
  EXPECT_NEAR(h.stash.aux_loss, 0.09375, 1e-7);
}

TEST(BalanceHandWorked, SeqAuxLossCountsEachSequence) {
  // E = 2, k = 1. Sequence 0: P = [.5 .5] → 0, P = [.75 .25] → 0: c = [2, 0], Σ P·c = 2.5,
  // loss 2/(1·2²)·2.5 = 1.25. Sequence 1: P = [.25 .75] → 1, P = [.5 .5] → 0: c = [1, 1],
  // Σ P·c = .75 + 1.25 = 2, loss 1. seq_aux = 0.1 · (1.25 + 1)/2 = 0.1125. The whole micro-batch
  // as one sequence instead: c = [3, 1], Σ_t P = [2, 2], aux = 0.1 · 2/(1·4²)·8 = 0.1.
  const std::vector<float> z = {0, 0, std::log(3.0f), 0, 0, std::log(3.0f), 0, 0};
  IdentityRouter per_seq(moe_config(2, 1, LoadBalancingType::kSeqAuxLoss, 0.1f));
  per_seq.route(z, 2, 2);
  EXPECT_EQ(per_seq.stash.idx, (std::vector<int32_t>{0, 0, 1, 0}));
  EXPECT_NEAR(per_seq.stash.aux_loss, 0.1125, 1e-7);
  IdentityRouter whole(moe_config(2, 1, LoadBalancingType::kAuxLoss, 0.1f));
  whole.route(z, 2, 2);
  EXPECT_NEAR(whole.stash.aux_loss, 0.1, 1e-7);
}

TEST(BalanceHandWorked, ZLossIsMeanSquaredLogSumExp) {
  // lse([0,0,0]) = ln 3, lse([1,1,1]) = 1 + ln 3.
  MoeConfig moe = moe_config(3, 1, LoadBalancingType::kNone, 0.0f);
  moe.moe_z_loss_coeff = 0.2f;
  IdentityRouter h(moe);
  h.route({0, 0, 0, 1, 1, 1}, 1, 2);
  const double l3 = std::log(3.0);
  EXPECT_NEAR(h.stash.z_loss, 0.2 * (l3 * l3 + (1 + l3) * (1 + l3)) / 2, 1e-6);
  EXPECT_EQ(h.stash.aux_loss, 0.0);
}

// ---- each loss's gradient on its own: L = aux_scale·(aux + z) with d loss / d g = 0.

void check_loss_gradient(const MoeConfig& moe, int B, int S) {
  ModelConfig config;
  config.hidden_size = 6;
  config.init_method_std = 0.6f;
  config.moe = moe;
  const ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  Router router(config, ctx, 0, registry);
  registry.init(11);
  const int N = B * S, H = config.hidden_size, E = moe.num_experts, k = moe.moe_router_topk;
  const double aux_scale = 0.6;
  Tensor x = Tensor::from_vector({N, H}, random_vector(N * H, 12));
  RouterStash stash;
  auto loss = [&]() {
    router.forward(x, B, S, stash);
    return aux_scale * (stash.aux_loss + stash.z_loss);
  };
  loss();
  const std::vector<int32_t> idx = stash.idx;
  Tensor dx = Tensor::zeros({N, H});
  router.weight()->grad.zero();
  router.backward_dx(Tensor::zeros({N, k}), aux_scale, dx, false, stash);
  router.backward_dw(stash);
  const std::vector<float> dx_v = dx.to_vector(), dw_v = router.weight()->grad.to_vector();
  double largest = 0;
  for (int i = 0; i < N * H; ++i) {
    const double num = numeric_derivative(loss, x.data(), i, 1e-3);
    EXPECT_TRUE(close(num, dx_v[i], 1e-2, 1e-4)) << "dx[" << i << "] " << num << " vs " << dx_v[i];
    largest = std::max(largest, std::abs(num));
  }
  float* w = router.weight()->value.data();
  for (int i = 0; i < E * H; ++i) {
    const double num = numeric_derivative(loss, w, i, 1e-3);
    EXPECT_TRUE(close(num, dw_v[i], 1e-2, 1e-4)) << "dWr[" << i << "] " << num << " vs " << dw_v[i];
    largest = std::max(largest, std::abs(num));
  }
  EXPECT_GT(largest, 1e-2);  // a real gradient was compared
  loss();
  EXPECT_EQ(stash.idx, idx) << "routing changed under the perturbations";
}

TEST(BalanceGradient, SoftmaxAuxLossAlone) {
  check_loss_gradient(moe_config(5, 2, LoadBalancingType::kAuxLoss, 1.0f), 2, 4);
}

TEST(BalanceGradient, SoftmaxSeqAuxLossAlone) {
  check_loss_gradient(moe_config(5, 2, LoadBalancingType::kSeqAuxLoss, 1.0f), 3, 3);
}

TEST(BalanceGradient, SigmoidAuxLossAlone) {
  MoeConfig moe = moe_config(5, 2, LoadBalancingType::kAuxLoss, 1.0f);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  check_loss_gradient(moe, 2, 4);
}

TEST(BalanceGradient, SigmoidSeqAuxLossAlone) {
  MoeConfig moe = moe_config(5, 3, LoadBalancingType::kSeqAuxLoss, 1.0f);
  moe.moe_router_score_function = RouterScoreFunction::kSigmoid;
  check_loss_gradient(moe, 3, 3);
}

TEST(BalanceGradient, ZLossAlone) {
  MoeConfig moe = moe_config(5, 2, LoadBalancingType::kNone, 0.0f);
  moe.moe_z_loss_coeff = 0.5f;
  check_loss_gradient(moe, 2, 4);
}

// ---- capacity: a hand-worked micro-batch of B = 2 sequences of S = 3 tokens, E = 4, k = 2,
// post-softmax gates g = σ(z_a − z_b) of the two chosen logits. cf = 1: cap = ceil(6·2/4) = 3
// over the whole micro-batch (per sequence it would be 2).
//   token  logits            idx     gates
//   t0     [2, 1, -5, -5]    {0, 1}  σ(1)=.731  σ(-1)=.269
//   t1     [0, 3, -5, -5]    {1, 0}  σ(3)=.953  σ(-3)=.047
//   t2     [1, -5, .5, -5]   {0, 2}  σ(.5)=.622 σ(-.5)=.378
//   t3     [3, 0, -5, -5]    {0, 1}  .953       .047
//   t4     [0, -5, -5, 2]    {3, 0}  .881       .119
//   t5     [-5, 2, 1, -5]    {1, 2}  .731       .269
// Expert 0 is chosen by t0..t4 (5 > 3), expert 1 by t0, t1, t3, t5 (4 > 3).
//   probs:    expert 0 keeps t3 .953, t0 .731, t2 .622 (drops t1, t4);
//             expert 1 keeps t1 .953, t5 .731, t0 .269 (drops t3).
//   position: expert 0 keeps t0, t1, t2 (drops t3, t4); expert 1 keeps t0, t1, t3 (drops t5).
const std::vector<float> kCapacityLogits = {2, 1, -5, -5, 0, 3,  -5, -5, 1,  -5, 0.5f, -5,
                                            3, 0, -5, -5, 0, -5, -5, 2,  -5, 2,  1,    -5};
const std::vector<int32_t> kCapacityIdx = {0, 1, 1, 0, 0, 2, 0, 1, 3, 0, 1, 2};
const std::vector<uint8_t> kKeepProbs = {1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1};
const std::vector<uint8_t> kKeepPosition = {1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1};

MoeConfig capacity_config(TokenDropPolicy policy, float cf) {
  MoeConfig moe = moe_config(4, 2, LoadBalancingType::kNone, 0.0f);
  moe.moe_expert_capacity_factor = cf;
  moe.moe_token_drop_policy = policy;
  return moe;
}

TEST(Capacity, HandWorkedKeptSetsOfBothPolicies) {
  IdentityRouter probs(capacity_config(TokenDropPolicy::kProbs, 1.0f));
  probs.route(kCapacityLogits, 2, 3);
  EXPECT_EQ(probs.stash.idx, kCapacityIdx);
  EXPECT_EQ(probs.stash.keep, kKeepProbs);
  EXPECT_EQ(probs.stash.dropped, 3);
  EXPECT_EQ(probs.stash.counts, (std::vector<int64_t>{5, 4, 2, 1}));  // before dropping
  IdentityRouter position(capacity_config(TokenDropPolicy::kPosition, 1.0f));
  position.route(kCapacityLogits, 2, 3);
  EXPECT_EQ(position.stash.idx, kCapacityIdx);
  EXPECT_EQ(position.stash.keep, kKeepPosition);
  EXPECT_EQ(position.stash.dropped, 3);
  // Gates are not renormalised after dropping: t1 keeps its .953 on expert 1.
  EXPECT_NEAR(probs.stash.gates.data()[2], 1 / (1 + std::exp(-3.0)), 1e-6);
}

TEST(Capacity, RoundsUpAndDroplessKeepsAll) {
  // cf = 0.5: cap = ceil(1.5) = 2 per expert, so kept loads are min(c_e, 2) = [2, 2, 2, 1].
  for (TokenDropPolicy policy : {TokenDropPolicy::kProbs, TokenDropPolicy::kPosition}) {
    IdentityRouter h(capacity_config(policy, 0.5f));
    h.route(kCapacityLogits, 2, 3);
    std::vector<int64_t> kept(4, 0);
    for (size_t a = 0; a < h.stash.keep.size(); ++a) kept[h.stash.idx[a]] += h.stash.keep[a];
    EXPECT_EQ(kept, (std::vector<int64_t>{2, 2, 2, 1}));
    EXPECT_EQ(h.stash.dropped, 5);
  }
  IdentityRouter dropless(capacity_config(TokenDropPolicy::kProbs, 0.0f));
  dropless.route(kCapacityLogits, 2, 3);
  EXPECT_EQ(dropless.stash.keep, std::vector<uint8_t>(12, 1));
  EXPECT_EQ(dropless.stash.dropped, 0);
}

// The MoE layer with H = E = 4 and an identity router: y[t] = Σ_{kept j} g·expert_j(x[t]).
struct CapacityLayer {
  ModelConfig config;
  ParallelContext ctx = testing::test_context();
  ParameterRegistry registry;
  std::unique_ptr<MoeLayer> layer;

  explicit CapacityLayer(const MoeConfig& moe) {
    config.num_layers = 1;
    config.hidden_size = 4;
    config.init_method_std = 0.4f;
    config.moe = moe;
    config.moe.moe_ffn_hidden_size = 3;
    layer = std::make_unique<MoeLayer>(config, ctx, 0, registry);
    registry.init(21);
    float* w = registry.find("layers/0/moe/router")->value.data();
    for (int i = 0; i < 16; ++i) w[i] = (i / 4 == i % 4) ? 1.0f : 0.0f;
  }
};

TEST(Capacity, DroppedAssignmentsContributeNothing) {
  for (TokenDropPolicy policy : {TokenDropPolicy::kProbs, TokenDropPolicy::kPosition}) {
    CapacityLayer h(capacity_config(policy, 1.0f));
    const int N = 6, H = 4, F = 3, k = 2;
    Tensor x = Tensor::from_vector({N, H}, kCapacityLogits);
    Tensor y = Tensor::zeros({N, H});
    MoeStash stash;
    h.layer->forward(x, {2, 3}, 1.0, y, false, stash);
    const auto& keep = policy == TokenDropPolicy::kProbs ? kKeepProbs : kKeepPosition;
    ASSERT_EQ(stash.router.keep, keep);
    const float* wg = h.registry.find("layers/0/moe/experts/w_gate")->value.data();
    const float* wu = h.registry.find("layers/0/moe/experts/w_up")->value.data();
    const float* wd = h.registry.find("layers/0/moe/experts/w_down")->value.data();
    for (int t = 0; t < N; ++t) {
      std::vector<double> ref(H, 0.0);
      for (int j = 0; j < k; ++j) {
        if (!keep[t * k + j]) continue;
        const int e = kCapacityIdx[t * k + j];
        const double g = stash.router.gates.data()[t * k + j];
        for (int f = 0; f < F; ++f) {
          double gate = 0, up = 0;
          for (int i = 0; i < H; ++i) {
            gate += double(wg[(e * F + f) * H + i]) * kCapacityLogits[t * H + i];
            up += double(wu[(e * F + f) * H + i]) * kCapacityLogits[t * H + i];
          }
          const double act = gate / (1 + std::exp(-gate)) * up;
          for (int o = 0; o < H; ++o) ref[o] += g * act * wd[(e * H + o) * F + f];
        }
      }
      for (int o = 0; o < H; ++o) EXPECT_NEAR(y.data()[t * H + o], ref[o], 1e-5) << t << "," << o;
    }
  }
}

TEST(Capacity, PaddingToCapacityChangesNoNumber) {
  // Forward output, input gradient and every parameter gradient, bit for bit.
  auto run = [](bool pad) {
    MoeConfig moe = capacity_config(TokenDropPolicy::kProbs, 1.0f);
    moe.moe_pad_expert_input_to_capacity = pad;
    moe.moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
    moe.moe_aux_loss_coeff = 0.1f;
    moe.moe_z_loss_coeff = 0.01f;
    CapacityLayer h(moe);
    const int N = 6, H = 4;
    Tensor x = Tensor::from_vector({N, H}, kCapacityLogits);
    Tensor y = Tensor::zeros({N, H}), dx = Tensor::zeros({N, H});
    MoeStash stash;
    h.layer->forward(x, {2, 3}, 0.5, y, false, stash);
    EXPECT_EQ(stash.router.dropped, 3);
    const Tensor dy = Tensor::from_vector({N, H}, random_vector(N * H, 31));
    h.layer->backward_dx(dy, dx, stash);
    h.layer->backward_dw(stash);
    std::vector<std::vector<float>> out = {
        y.to_vector(), dx.to_vector(), {float(stash.router.aux_loss), float(stash.router.z_loss)}};
    for (const auto& p : h.registry.parameters()) out.push_back(p->grad.to_vector());
    return out;
  };
  EXPECT_EQ(run(false), run(true));
}

// ---- aux-loss-free balancing: b_e ← b_e + rate·sign(c̄ − c_e), exact in integers.

TEST(ExpertBiasUpdate, FractionalMeanAndBalancedLoads) {
  // c̄ = 7/3: 3 is above (down), 2 below (up).
  std::vector<float> bias = {0.0f, 0.0f, 0.0f};
  update_expert_bias({3, 2, 2}, 0.5f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{-0.5f, 0.5f, 0.5f}));
  update_expert_bias({4, 4, 4}, 0.5f, bias.data());  // balanced: unchanged
  EXPECT_EQ(bias, (std::vector<float>{-0.5f, 0.5f, 0.5f}));
  // Counts too large for float to tell apart still give the exact sign.
  const int64_t big = int64_t{1} << 40;
  update_expert_bias({big + 1, big, big - 1}, 0.25f, bias.data());
  EXPECT_EQ(bias, (std::vector<float>{-0.75f, 0.5f, 0.75f}));
}

}  // namespace
}  // namespace moefold
