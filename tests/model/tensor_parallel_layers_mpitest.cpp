// Each tensor-parallel layer against its unsharded twin (STYLE.md 11, picotron's
// test_tensor_parallel): TP = world size, with and without sequence parallelism. The twin is the
// same layer built for one process; both are initialised from the same seed, so every shard
// holds exactly its slice of the twin's weights. Outputs, input gradients and every parameter
// gradient (this rank's slice) must match.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "model/attention.h"
#include "model/embedding.h"
#include "model/lm_head.h"
#include "model/mlp.h"
#include "model/transformer_layer.h"
#include "parallel/context.h"
#include "tensor/ops.h"

namespace moefold {
namespace {

constexpr uint64_t kSeed = 5;
constexpr int64_t kBatch = 2, kSeq = 8, kTokens = kBatch * kSeq;

ModelConfig tp_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_query_groups = 4;
  c.ffn_hidden_size = 16;
  c.vocab_size = 50;
  c.make_vocab_size_divisible_by = 16;
  c.seq_length = kSeq;
  c.init_method_std = 0.1f;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, 1};
  c.moe.moe_aux_loss_coeff = 0.1f;
  c.moe.moe_z_loss_coeff = 0.01f;
  c.moe.moe_shared_expert_intermediate_size = 16;
  return c;
}

std::vector<float> random_values(int64_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

// The slice of a global row-major tensor that `layout` describes.
std::vector<float> slice_of(const std::vector<float>& global, const TensorLayout& layout) {
  const int rank = static_cast<int>(layout.global_shape.size());
  std::vector<float> out;
  out.reserve(layout.local_numel());
  std::vector<int64_t> idx(rank, 0);
  for (int64_t i = 0; i < layout.local_numel(); ++i) {
    int64_t g = 0;
    for (int a = 0; a < rank; ++a) g = g * layout.global_shape[a] + idx[a] + layout.local_offset[a];
    out.push_back(global[g]);
    for (int a = rank - 1; a >= 0; --a) {
      if (++idx[a] < layout.local_shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
}

void expect_near_all(const std::vector<float>& actual, const std::vector<float>& expected,
                     const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 0.0;
  for (float e : expected) scale = std::max(scale, std::fabs(static_cast<double>(e)));
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], 2e-5 * scale + 1e-4 * std::fabs(expected[i]))
        << what << " [" << i << "]";
  }
}

class TensorParallelLayers : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    ParallelConfig p;
    p.tensor_model_parallel_size = world_;
    p.expert_tensor_parallel_size = 1;
    p.sequence_parallel = GetParam();
    auto ctx = ParallelContext::create(p, MPI_COMM_WORLD);
    ASSERT_TRUE(ctx.ok()) << ctx.status();
    ctx_ = *ctx;
    single_ = ParallelContext::single_process();
    for (int r = 0; r < kTokens; ++r) positions_.push_back(static_cast<int32_t>(r % kSeq));
  }

  bool sharded() const { return GetParam() && world_ > 1; }
  int64_t local_rows() const { return sharded() ? kTokens / world_ : kTokens; }
  int64_t first_row() const { return sharded() ? ctx_.coords.tp_rank * local_rows() : 0; }

  // This rank's token rows (residual layout) of a full (N, cols) buffer.
  Tensor local_tokens(const std::vector<float>& full, int64_t cols) const {
    const std::vector<float> rows(full.begin() + first_row() * cols,
                                  full.begin() + (first_row() + local_rows()) * cols);
    return Tensor::from_vector({local_rows(), cols}, rows);
  }
  std::vector<float> local_tokens_vector(const Tensor& full, int64_t cols) const {
    return local_tokens(full.to_vector(), cols).to_vector();
  }

  // Every parameter's local gradient against the twin's slice. Expert gradients are summed over
  // TP first, as the expert-DP reduction does (each TP rank adds 1/TP of the whole gradient).
  void expect_parameter_gradients(const ParameterRegistry& parallel,
                                  const ParameterRegistry& twin) const {
    ASSERT_EQ(parallel.parameters().size(), twin.parameters().size());
    for (const auto& p : parallel.parameters()) {
      const Parameter* t = twin.find(p->name());
      ASSERT_NE(t, nullptr) << p->name();
      std::vector<float> g = p->grad.to_vector();
      if (p->is_expert) ctx_.tp->all_reduce(std::span<float>(g));
      expect_near_all(g, slice_of(t->grad.to_vector(), p->layout), p->name());
    }
  }

  int world_ = 1;
  ParallelContext ctx_, single_;
  std::vector<int32_t> positions_;
};

TEST_P(TensorParallelLayers, AttentionMatchesTwin) {
  const ModelConfig c = tp_config();
  const int64_t H = c.hidden_size;
  ParameterRegistry reg, twin_reg;
  Attention attention(c, ctx_, 0, reg), twin(c, single_, 0, twin_reg);
  reg.init(kSeed);
  twin_reg.init(kSeed);
  const std::vector<float> a = random_values(kTokens * H, 1), dy = random_values(kTokens * H, 2);

  AttentionStash tst;
  Tensor ta = Tensor::from_vector({kTokens, H}, a), ty = Tensor::zeros({kTokens, H});
  Tensor tdy = Tensor::from_vector({kTokens, H}, dy), tda = Tensor::zeros({kTokens, H});
  twin.forward(ta, positions_.data(), kBatch, kSeq, ty, false, tst);
  twin.backward_dx(tdy, positions_.data(), tda, tst);
  twin.backward_dw(tst);

  AttentionStash st;
  Tensor pa = local_tokens(a, H), py = Tensor::zeros({local_rows(), H});
  Tensor pdy = local_tokens(dy, H), pda = Tensor::zeros({local_rows(), H});
  attention.forward(pa, positions_.data(), kBatch, kSeq, py, false, st);
  attention.backward_dx(pdy, positions_.data(), pda, st);
  attention.backward_dw(st);

  expect_near_all(py.to_vector(), local_tokens_vector(ty, H), "y");
  expect_near_all(pda.to_vector(), local_tokens_vector(tda, H), "da");
  expect_parameter_gradients(reg, twin_reg);
}

TEST_P(TensorParallelLayers, MlpMatchesTwin) {
  const ModelConfig c = tp_config();
  const int64_t H = c.hidden_size;
  ParameterRegistry reg, twin_reg;
  Mlp mlp(c, ctx_, "layers/0/mlp/", c.ffn_hidden_size, reg, GetParam());
  Mlp twin(c, single_, "layers/0/mlp/", c.ffn_hidden_size, twin_reg);
  reg.init(kSeed);
  twin_reg.init(kSeed);
  const std::vector<float> x = random_values(kTokens * H, 3), dy = random_values(kTokens * H, 4);
  const std::vector<float> base = random_values(kTokens * H, 5);

  MlpStash tst;  // accumulate into a non-zero y and dx, as the residual stream does
  Tensor tx = Tensor::from_vector({kTokens, H}, x), ty = Tensor::from_vector({kTokens, H}, base);
  Tensor tdy = Tensor::from_vector({kTokens, H}, dy), tdx = Tensor::from_vector({kTokens, H}, base);
  twin.forward(tx, ty, true, tst);
  twin.backward_dx(tdy, tdx, true, tst);
  twin.backward_dw(tst);

  MlpStash st;
  Tensor px = local_tokens(x, H), py = local_tokens(base, H);
  Tensor pdy = local_tokens(dy, H), pdx = local_tokens(base, H);
  mlp.forward(px, py, true, st);
  mlp.backward_dx(pdy, pdx, true, st);
  mlp.backward_dw(st);

  expect_near_all(py.to_vector(), local_tokens_vector(ty, H), "y");
  expect_near_all(pdx.to_vector(), local_tokens_vector(tdx, H), "dx");
  expect_parameter_gradients(reg, twin_reg);
}

TEST_P(TensorParallelLayers, EmbeddingMatchesTwin) {
  const ModelConfig c = tp_config();
  const int64_t H = c.hidden_size, V = c.padded_vocab_size();
  ParameterRegistry reg, twin_reg;
  Embedding embedding(c, ctx_, reg), twin(c, single_, twin_reg);
  reg.init(kSeed);
  twin_reg.init(kSeed);
  std::vector<int32_t> tokens(kTokens);
  std::mt19937 gen(6);
  for (int32_t& t : tokens) t = static_cast<int32_t>(gen() % V);
  tokens[0] = tokens[5];  // a repeated token accumulates
  const std::vector<float> dh = random_values(kTokens * H, 7);

  Tensor th = Tensor::zeros({kTokens, H});
  twin.forward(tokens.data(), kTokens, th);
  twin.backward_dw(Tensor::from_vector({kTokens, H}, dh), tokens.data(), kTokens);

  Tensor ph = Tensor::zeros({local_rows(), H});
  embedding.forward(tokens.data(), kTokens, ph);
  embedding.backward_dw(local_tokens(dh, H), tokens.data(), kTokens);

  expect_near_all(ph.to_vector(), local_tokens_vector(th, H), "h");
  expect_parameter_gradients(reg, twin_reg);
}

TEST_P(TensorParallelLayers, VocabularyParallelCrossEntropyMatchesTwin) {
  ModelConfig c = tp_config();
  c.untie_embeddings_and_output_weights = true;
  const int64_t H = c.hidden_size, V = c.padded_vocab_size();
  ParameterRegistry reg, twin_reg;
  LmHead head(c, ctx_, nullptr, reg), twin(c, single_, nullptr, twin_reg);
  reg.init(kSeed);
  twin_reg.init(kSeed);
  std::vector<int32_t> labels(kTokens);
  std::vector<float> mask(kTokens, 1.0f);
  std::mt19937 gen(8);
  for (int32_t& l : labels) l = static_cast<int32_t>(gen() % V);
  mask[3] = 0.0f;
  labels[3] = -1;  // a masked label is never read
  const std::vector<float> h = random_values(kTokens * H, 9, 3.0f);
  constexpr float kScale = 0.25f;

  // Σ CE·mask of one call, from its float64 on the device.
  auto loss_of = [&](const LmHead& lm_head, const Tensor& h_nH, float scale, Tensor* dh) {
    const Tensor loss_sum = ops::float64_zeros(1, h_nH.device());
    lm_head.forward_backward(h_nH, labels.data(), mask.data(), scale, dh, loss_sum);
    return ops::float64_to_host(loss_sum)[0];
  };
  Tensor tdh = Tensor::zeros({kTokens, H});
  const double twin_loss = loss_of(twin, Tensor::from_vector({kTokens, H}, h), kScale, &tdh);
  Tensor pdh = Tensor::zeros({local_rows(), H});
  const double loss = loss_of(head, local_tokens(h, H), kScale, &pdh);
  const double eval_loss = loss_of(head, local_tokens(h, H), 0.0f, nullptr);

  EXPECT_NEAR(loss, twin_loss, 1e-5 * twin_loss);
  EXPECT_NEAR(eval_loss, twin_loss, 1e-5 * twin_loss);
  expect_near_all(pdh.to_vector(), local_tokens_vector(tdh, H), "dh");
  expect_parameter_gradients(reg, twin_reg);
}

// A dense layer (0) and an MoE layer with a shared expert (1): norms on the token shard, norm
// grads summed over TP, the MoE on all tokens with its balance and z losses.
TEST_P(TensorParallelLayers, TransformerLayersMatchTwin) {
  const ModelConfig c = tp_config();
  const int64_t H = c.hidden_size;
  for (int layer : {0, 1}) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    ParameterRegistry reg, twin_reg;
    TransformerLayer parallel(c, ctx_, layer, reg), twin(c, single_, layer, twin_reg);
    reg.init(kSeed);
    twin_reg.init(kSeed);
    const std::vector<float> h = random_values(kTokens * H, 10 + layer);
    const std::vector<float> dh = random_values(kTokens * H, 20 + layer);
    constexpr double kAuxScale = 0.5;

    TransformerLayerStash tst;
    Tensor th = Tensor::from_vector({kTokens, H}, h), tout = Tensor::zeros({kTokens, H});
    Tensor tdh = Tensor::from_vector({kTokens, H}, dh);
    twin.forward(th, positions_.data(), kBatch, kSeq, kAuxScale, tout, tst);
    twin.backward(tdh, positions_.data(), tst);

    TransformerLayerStash st;
    Tensor ph = local_tokens(h, H), pout = Tensor::zeros({local_rows(), H});
    Tensor pdh = local_tokens(dh, H);
    parallel.forward(ph, positions_.data(), kBatch, kSeq, kAuxScale, pout, st);
    parallel.backward(pdh, positions_.data(), st);

    expect_near_all(pout.to_vector(), local_tokens_vector(tout, H), "h_out");
    expect_near_all(pdh.to_vector(), local_tokens_vector(tdh, H), "dh_in");
    expect_parameter_gradients(reg, twin_reg);
    if (layer == 1) {
      EXPECT_NEAR(st.moe.router.aux_loss, tst.moe.router.aux_loss, 1e-6);
      EXPECT_NEAR(st.moe.router.z_loss, tst.moe.router.z_loss, 1e-6);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(SequenceParallel, TensorParallelLayers, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("WithSequenceParallel")
                                             : std::string("NoSequenceParallel");
                         });

}  // namespace
}  // namespace moefold
