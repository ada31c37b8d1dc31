#include "trainer/memory_plan.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_format.h"

namespace moefold {
namespace {

constexpr double kMaxElements = 4.6e18;  // 2^62: tensor element counts are int64
constexpr double kFloatBytes = 4;

struct Term {
  std::string what;
  double elements;  // per rank
};

}  // namespace

MemoryPlan plan_memory(const Recipe& recipe, int world_size) {
  const ModelConfig& m = recipe.model;
  const ParallelConfig& p = recipe.parallel;
  const double tp = std::max(1, p.tensor_model_parallel_size);
  const double pp = std::max(1, p.pipeline_model_parallel_size);
  const double cp = std::max(1, p.context_parallel_size);
  const double ep = std::max(1, p.expert_model_parallel_size);
  const double etp = std::max(1, p.expert_tensor_parallel());
  const double dp = std::max(1.0, world_size / (tp * cp * pp));
  const double h = m.hidden_size, vocab = m.padded_vocab_size(), s = m.seq_length;
  const double q = double(m.num_attention_heads) * m.head_dim();
  const double kv = double(m.kv_heads()) * m.head_dim();
  const double layers = m.num_layers;
  double moe_layers = 0;
  for (int l = 0; l < m.num_layers; ++l) moe_layers += m.is_moe_layer(l) ? 1 : 0;
  const double dense_layers = layers - moe_layers;

  const double embedding = vocab * h / tp * (m.untie_embeddings_and_output_weights ? 2 : 1);
  const double attention = layers * (2 * h * q + 2 * h * kv) / tp / pp;
  const double dense_mlp = dense_layers * 3 * h * m.ffn_hidden_size / tp / pp;
  const double experts = moe_layers *
                         (double(m.moe.num_experts) * 3 * h * m.moe.moe_ffn_hidden_size / (ep * etp) +
                          3 * h * m.moe.moe_shared_expert_intermediate_size / tp) /
                         pp;
  MemoryPlan plan;
  plan.parameters_per_rank = embedding + attention + dense_mlp + experts;
  // Weights and gradients always; Adam's two moments, sharded over DP with the distributed
  // optimizer.
  const double state_copies = 2 + (p.use_distributed_optimizer ? 2 / dp : 2);
  const double tokens = double(recipe.training.micro_batch_size) * s / cp;
  const Term terms[] = {
      {absl::StrFormat("the weights, gradients and Adam state (%.3g parameters on this rank, "
                       "%.3g of them the embedding of vocab %d × hidden %d)",
                       plan.parameters_per_rank, embedding, m.padded_vocab_size(), m.hidden_size),
       plan.parameters_per_rank * state_copies},
      {absl::StrFormat("one micro-batch's logits and their gradient (micro_batch_size %d × "
                       "seq_length %d × vocab %d)",
                       recipe.training.micro_batch_size, m.seq_length, m.padded_vocab_size()),
       2 * tokens * vocab / tp},
      {absl::StrFormat("one micro-batch's layer inputs kept for backward (micro_batch_size %d × "
                       "seq_length %d × hidden %d × %d layers)",
                       recipe.training.micro_batch_size, m.seq_length, m.hidden_size,
                       m.num_layers),
       tokens * h * layers / pp},
  };
  double largest = -1;
  for (const Term& t : terms) {
    plan.bytes_per_rank += t.elements * kFloatBytes;
    if (t.elements > largest) {
      largest = t.elements;
      plan.largest = t.what;
    }
  }
  return plan;
}

absl::Status check_memory_plan(const Recipe& recipe, int world_size, double available_bytes) {
  const MemoryPlan plan = plan_memory(recipe, world_size);
  if (!(plan.bytes_per_rank / kFloatBytes < kMaxElements)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the model's sizes overflow 64-bit element counts: %s", recipe.source, plan.largest));
  }
  if (available_bytes > 0 && plan.bytes_per_rank > available_bytes) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: each rank needs at least %.3g GB, this machine has %.3g GB available per rank; the "
        "largest part is %s",
        recipe.source, plan.bytes_per_rank / 1e9, available_bytes / 1e9, plan.largest));
  }
  return absl::OkStatus();
}

double available_bytes_per_rank() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") break;
    kib = 0;
  }
  if (kib <= 0) return 0;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return kib * 1024 / ranks;
}

}  // namespace moefold
