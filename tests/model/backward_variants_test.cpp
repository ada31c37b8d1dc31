// Backward variants against the plain stored-activation backward, with two micro-batches in
// flight at once (as in 1F1B): full activation recomputation (forward keeps only the residual
// stream, backward re-runs each layer first) and deferred weight gradients (zero-bubble
// schedules: both input-gradient passes first, then both weight-gradient passes). Every gradient
// and loss is bit-identical; recomputation takes less activation memory.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "gradient_check.h"
#include "model/model.h"

namespace moefold {
namespace {

// Four layers (dense, then MoE with capacity dropping and every router loss), hidden 32.
ModelConfig recompute_config() {
  ModelConfig c;
  c.num_layers = 4;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.ffn_hidden_size = 64;
  c.vocab_size = 64;
  c.seq_length = 32;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 32;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, 1, 1, 1};
  c.moe.moe_shared_expert_intermediate_size = 16;
  c.moe.moe_aux_loss_coeff = 0.1f;
  c.moe.moe_z_loss_coeff = 0.01f;
  c.moe.moe_router_load_balancing_type = LoadBalancingType::kSeqAuxLoss;
  c.moe.moe_expert_capacity_factor = 1.0f;
  return c;
}

TokenBatch random_batch(int batch, int seq, int vocab, uint32_t salt) {
  TokenBatch mb{batch, seq, {}, {}, {}};
  for (int t = 0; t < batch * seq; ++t) {
    mb.tokens.push_back(static_cast<int32_t>((13 * t + 7 * salt + 1) % vocab));
    mb.labels.push_back(static_cast<int32_t>((11 * t + salt + 5) % vocab));
    mb.loss_mask.push_back(1.0f);
  }
  return mb;
}

struct TrainingRun {
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  int64_t activation_peak = 0;  // above the parameters and gradients
};

enum class Backward { kPlain, kRecompute, kDeferWeights };

TrainingRun forward_backward(Backward variant) {
  const bool recompute = variant == Backward::kRecompute;
  const ModelConfig c = recompute_config();
  Model model(c, testing::test_context());
  model.set_recompute_activations(recompute);
  model.init_parameters(7);
  model.zero_grad();
  const LossScales scales{1.0 / (4.0 * c.seq_length), 0.5};
  const TokenBatch a = random_batch(2, c.seq_length, c.vocab_size, 1);
  const TokenBatch b = random_batch(2, c.seq_length, c.vocab_size, 2);
  std::unique_ptr<ModelStash> sa = model.make_stash(), sb = model.make_stash();
  TrainingRun run;
  const int64_t baseline = MemoryStats::current_bytes();
  MemoryStats::reset_peak();
  for (const MicroBatchStats& s : {model.forward(a, scales, *sa), model.forward(b, scales, *sb)}) {
    run.losses.insert(run.losses.end(), {s.host_lm_loss_sum(), s.aux_loss, s.z_loss});
  }
  if (variant == Backward::kDeferWeights) {
    model.backward_chunk(0, *sa, nullptr, true);
    model.backward_chunk(0, *sb, nullptr, true);
    model.weight_gradients_chunk(0, *sa);
    model.weight_gradients_chunk(0, *sb);
  } else {
    model.backward(*sa);
    model.backward(*sb);
  }
  run.activation_peak = MemoryStats::peak_bytes() - baseline;
  for (Parameter* p : model.parameters()) run.grads.push_back(p->grad.to_vector());
  return run;
}

void expect_same_gradients(const TrainingRun& got, const TrainingRun& want) {
  EXPECT_EQ(got.losses, want.losses);
  ASSERT_EQ(got.grads.size(), want.grads.size());
  for (size_t i = 0; i < want.grads.size(); ++i) {
    EXPECT_EQ(got.grads[i], want.grads[i]) << "parameter " << i;
  }
}

TEST(BackwardVariants, DeferredWeightGradientsAreBitIdentical) {
  expect_same_gradients(forward_backward(Backward::kDeferWeights),
                        forward_backward(Backward::kPlain));
}

TEST(BackwardVariants, RecomputationIsBitIdenticalWithLessMemory) {
  const TrainingRun stored = forward_backward(Backward::kPlain);
  const TrainingRun recomputed = forward_backward(Backward::kRecompute);
  expect_same_gradients(recomputed, stored);
  EXPECT_LT(recomputed.activation_peak, stored.activation_peak * 3 / 4)
      << recomputed.activation_peak << " vs " << stored.activation_peak;
}

}  // namespace
}  // namespace moefold
