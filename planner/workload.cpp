#include "planner/workload.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "data/tokenizer.h"
#include "model/model.h"
#include "parallel/layout.h"
#include "trainer/config_validate.h"

namespace moefold {

double Workload::tokens() const {
  return double(training.micro_batch_size) * model.seq_length / cp;
}
double Workload::residual_rows() const { return sequence_parallel() ? tokens() / tp : tokens(); }
double Workload::routed_rows() const { return tp > 1 ? tokens() / tp : tokens(); }
double Workload::mean_expert_rows() const {
  return routed_rows() * model.moe.moe_router_topk * etp;
}
double Workload::expert_rows() const { return mean_expert_rows() * imbalance; }

absl::Status resolve_vocabulary(Recipe& r) {
  if (r.model.vocab_size != 0) return absl::OkStatus();
  auto tokenizer = make_tokenizer(r.data.tokenizer_type, r.data.vocab_file, r.data.merge_file);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        r.source, ": model.vocab_size is 0 (from the tokenizer) and the tokenizer cannot be read: ",
        tokenizer.status().message()));
  }
  r.model.vocab_size = static_cast<int>((*tokenizer)->vocab_size());
  return absl::OkStatus();
}

absl::StatusOr<Workload> make_workload(const Recipe& recipe, int world, double imbalance) {
  Recipe r = recipe;
  if (absl::Status s = resolve_vocabulary(r); !s.ok()) return s;
  if (absl::Status s = validate_recipe_for_world(r, world); !s.ok()) return s;
  if (!(imbalance >= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("routing imbalance ", imbalance, " must be >= 1 (max/mean tokens per EP rank)"));
  }
  auto partition = partition_layers(r.model.num_layers, r.parallel);
  if (!partition.ok()) return partition.status();
  // The model's own limits, as the trainer checks them at start-up (Model::validate reads only
  // the sizes, which every rank shares; no communicator is needed).
  auto layout = build_rank_layout(r.parallel, world);
  if (!layout.ok()) return layout.status();
  ParallelContext sizes;
  sizes.config = r.parallel;
  sizes.config.expert_tensor_parallel_size = r.parallel.expert_tensor_parallel();
  sizes.coords = layout->coordinates[0];
  if (absl::Status s = Model::validate(r.model, sizes); !s.ok()) return s;

  Workload w;
  w.model = r.model;
  w.parallel = r.parallel;
  w.training = r.training;
  w.world = world;
  const ParallelConfig& p = r.parallel;
  w.tp = p.tensor_model_parallel_size;
  w.cp = p.context_parallel_size;
  w.pp = p.pipeline_model_parallel_size;
  w.dp = world / (w.tp * w.cp * w.pp);
  w.ep = p.expert_model_parallel_size;
  w.etp = p.expert_tensor_parallel();
  w.edp = world / (w.ep * w.etp * w.pp);
  w.chunks = model_chunks(p);
  w.schedule = pipeline_schedule_kind(p);
  w.partition = *partition;
  const int64_t per_step = int64_t{w.training.micro_batch_size} * w.dp;
  if (w.training.global_batch_size <= 0) w.training.global_batch_size = static_cast<int>(per_step);
  w.micro_batches = static_cast<int>(w.training.global_batch_size / per_step);
  const float capacity = w.model.moe.moe_expert_capacity_factor;
  w.imbalance = w.ep > 1 ? imbalance : 1.0;
  if (capacity > 0) {
    w.imbalance = w.model.moe.moe_pad_expert_input_to_capacity ? capacity
                                                               : std::min<double>(w.imbalance, capacity);
  }
  return w;
}

namespace {

double attention_parameters(const ModelConfig& m) {
  const double q = double(m.num_attention_heads) * m.head_dim();
  const double kv = double(m.kv_heads()) * m.head_dim();
  const double qk_norms = m.qk_layernorm ? 2 * m.head_dim() : 0;
  return m.hidden_size * (q + 2 * kv) + q * m.hidden_size + qk_norms;
}

}  // namespace

double total_parameters(const ModelConfig& m) {
  const double H = m.hidden_size, V = m.padded_vocab_size();
  double n = V * H * (m.untie_embeddings_and_output_weights ? 2 : 1) + H;
  for (int l = 0; l < m.num_layers; ++l) {
    n += 2 * H + attention_parameters(m);
    if (m.is_moe_layer(l)) {
      n += m.moe.num_experts * H * (1 + 3.0 * m.moe.moe_ffn_hidden_size) +
           3 * H * m.moe.moe_shared_expert_intermediate_size;
    } else {
      n += 3 * H * m.ffn_hidden_size;
    }
  }
  return n;
}

double active_parameters(const ModelConfig& m) {
  const double H = m.hidden_size, V = m.padded_vocab_size();
  double n = H + V * H;  // final norm and the output projection
  for (int l = 0; l < m.num_layers; ++l) {
    n += 2 * H + attention_parameters(m);
    if (m.is_moe_layer(l)) {
      n += m.moe.num_experts * H + m.moe.moe_router_topk * 3 * H * m.moe.moe_ffn_hidden_size +
           3 * H * m.moe.moe_shared_expert_intermediate_size;
    } else {
      n += 3 * H * m.ffn_hidden_size;
    }
  }
  return n;
}

double model_flops_per_step(const ModelConfig& m, int64_t sequences) {
  const double tokens = double(sequences) * m.seq_length;
  const double attention = 6.0 * m.num_layers * double(m.seq_length) * m.seq_length *
                           m.num_attention_heads * m.head_dim() * sequences;
  return 6.0 * active_parameters(m) * tokens + attention;
}

}  // namespace moefold
