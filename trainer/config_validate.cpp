// Cross-key recipe checks. Each failure names the key whose line the user should look at.
#include "trainer/config_validate.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/stage_partition.h"
#include "parallel/layout.h"

namespace moefold {
namespace {

bool is_number(absl::string_view text) {
  double value = 0;
  return absl::SimpleAtod(text, &value);
}

absl::Status validate_model(const Recipe& r) {
  const ModelConfig& m = r.model;
  if (m.kv_channels == 0 && m.hidden_size % m.num_attention_heads != 0) {
    return recipe_error(
        r, "model.hidden_size",
        absl::StrCat(m.hidden_size, " is not divisible by model.num_attention_heads ",
                     m.num_attention_heads, " (set model.kv_channels for another head dim)"));
  }
  if (m.num_attention_heads % m.kv_heads() != 0) {
    return recipe_error(r, "model.num_query_groups",
                        absl::StrCat("model.num_attention_heads ", m.num_attention_heads,
                                     " is not divisible by ", m.kv_heads()));
  }
  if (m.head_dim() % 2 != 0) {
    if (m.kv_channels > 0) {
      return recipe_error(r, "model.kv_channels",
                          absl::StrCat(m.kv_channels, " must be even for rotary embeddings"));
    }
    return recipe_error(r, "model.hidden_size",
                        absl::StrCat("head dimension hidden_size / num_attention_heads = ",
                                     m.head_dim(), " must be even for rotary embeddings"));
  }
  return absl::OkStatus();
}

absl::Status validate_router(const Recipe& r) {
  const MoeConfig& moe = r.model.moe;
  if (moe.moe_router_enable_expert_bias &&
      moe.moe_router_score_function != RouterScoreFunction::kSigmoid) {
    return recipe_error(r, "moe.moe_router_enable_expert_bias",
                        "expert bias needs moe.moe_router_score_function sigmoid, not softmax");
  }
  if (moe.moe_router_pre_softmax &&
      moe.moe_router_score_function != RouterScoreFunction::kSoftmax) {
    return recipe_error(r, "moe.moe_router_pre_softmax",
                        "only applies to moe.moe_router_score_function softmax");
  }
  const int groups = moe.moe_router_num_groups;
  const int group_topk = moe.moe_router_group_topk;
  if (groups == 0) {
    if (group_topk > 0) {
      return recipe_error(r, "moe.moe_router_group_topk", "needs moe.moe_router_num_groups > 0");
    }
    return absl::OkStatus();
  }
  if (moe.num_experts % groups != 0) {
    return recipe_error(r, "moe.moe_router_num_groups",
                        absl::StrCat("moe.num_experts ", moe.num_experts, " is not divisible by ",
                                     groups, " groups"));
  }
  if (group_topk < 1 || group_topk > groups) {
    return recipe_error(
        r, "moe.moe_router_group_topk",
        absl::StrCat(group_topk, " must be between 1 and moe.moe_router_num_groups ", groups));
  }
  if (moe.moe_router_topk % group_topk != 0) {
    return recipe_error(
        r, "moe.moe_router_topk",
        absl::StrCat(moe.moe_router_topk, " is not divisible by moe.moe_router_group_topk ",
                     group_topk));
  }
  if (moe.moe_router_topk / group_topk > moe.num_experts / groups) {
    return recipe_error(r, "moe.moe_router_topk",
                        absl::StrCat(moe.moe_router_topk, " / moe.moe_router_group_topk ",
                                     group_topk, " experts per group is more than the ",
                                     moe.num_experts / groups, " experts of a group"));
  }
  return absl::OkStatus();
}

absl::Status validate_moe(const Recipe& r) {
  const ModelConfig& m = r.model;
  const MoeConfig& moe = m.moe;
  const int pattern_layers = static_cast<int>(moe.moe_layer_pattern.size());
  const int moe_layers =
      static_cast<int>(std::count(moe.moe_layer_pattern.begin(), moe.moe_layer_pattern.end(), 1));
  if (moe.num_experts == 0) {
    if (moe.moe_layer_freq == 0 && moe_layers > 0) {
      return recipe_error(r, "moe.moe_layer_freq", "marks MoE layers but moe.num_experts is 0");
    }
    if (m.ffn_hidden_size == 0) {
      return recipe_error(r, "model.ffn_hidden_size", "must be > 0 for a dense model");
    }
    return absl::OkStatus();
  }
  if (pattern_layers != m.num_layers) {
    return recipe_error(r, "moe.moe_layer_freq",
                        absl::StrCat("the list has ", pattern_layers,
                                     " entries but model.num_layers is ", m.num_layers));
  }
  if (moe_layers == 0) {
    return recipe_error(
        r, "moe.moe_layer_freq",
        absl::StrCat("marks no layer as MoE but moe.num_experts is ", moe.num_experts));
  }
  if (moe_layers < m.num_layers && m.ffn_hidden_size == 0) {
    return recipe_error(r, "model.ffn_hidden_size",
                        "must be > 0: moe.moe_layer_freq leaves some layers dense");
  }
  if (moe.moe_ffn_hidden_size == 0) {
    return recipe_error(r, "moe.moe_ffn_hidden_size",
                        absl::StrCat("must be > 0 when moe.num_experts is ", moe.num_experts));
  }
  if (moe.moe_router_topk > moe.num_experts) {
    return recipe_error(
        r, "moe.moe_router_topk",
        absl::StrCat(moe.moe_router_topk, " is larger than moe.num_experts ", moe.num_experts));
  }
  if (moe.moe_pad_expert_input_to_capacity && moe.moe_expert_capacity_factor == 0) {
    return recipe_error(r, "moe.moe_pad_expert_input_to_capacity",
                        "needs moe.moe_expert_capacity_factor > 0");
  }
  return validate_router(r);
}

absl::Status validate_training(const Recipe& r) {
  const TrainingConfig& t = r.training;
  const OptimizerConfig& o = r.optimizer;
  const ParallelConfig& p = r.parallel;
  if (t.global_batch_size > 0 && t.global_batch_size % t.micro_batch_size != 0) {
    return recipe_error(
        r, "training.global_batch_size",
        absl::StrCat(t.global_batch_size, " is not a multiple of training.micro_batch_size ",
                     t.micro_batch_size));
  }
  if (t.eval_interval > 0 && t.eval_iters == 0) {
    return recipe_error(r, "training.eval_iters", "must be ≥ 1 when training.eval_interval is set");
  }
  if (o.min_lr > o.lr) {
    return recipe_error(r, "optimizer.min_lr",
                        absl::StrCat(o.min_lr, " is larger than optimizer.lr ", o.lr));
  }
  const int decay_iters = o.lr_decay_iters > 0 ? o.lr_decay_iters : t.train_iters;
  if (o.lr_warmup_iters > decay_iters) {
    return recipe_error(r, "optimizer.lr_warmup_iters",
                        absl::StrCat(o.lr_warmup_iters, " is more than the ", decay_iters,
                                     " decay iterations (optimizer.lr_decay_iters, 0 = "
                                     "training.train_iters)"));
  }
  if (t.recompute_granularity == RecomputeGranularity::kSelective) {
    return recipe_error(r, "training.recompute_granularity",
                        "selective has nothing to drop here: attention keeps no (S,S) "
                        "scores, only its output and log-sum-exp (use full or none)");
  }
  if (p.overlap_param_gather && !p.use_distributed_optimizer) {
    return recipe_error(r, "parallel.overlap_param_gather",
                        "needs parallel.use_distributed_optimizer: true");
  }
  if (p.zero_bubble_pipeline && t.recompute_granularity != RecomputeGranularity::kNone) {
    return recipe_error(r, "parallel.zero_bubble_pipeline",
                        "needs the stored activations: training.recompute_granularity none");
  }
  if (p.fssdp_rematerialise && p.fssdp_spare_slots == 0) {
    return recipe_error(r, "parallel.fssdp_rematerialise",
                        "needs parallel.fssdp_spare_slots > 0 (load-driven FSSDP)");
  }
  if (p.fssdp_spare_slots > 0) {
    const char* key = "parallel.fssdp_spare_slots";
    if (p.moe_fssdp) {
      return recipe_error(r, key,
                          "not supported yet together with parallel.moe_fssdp (experts sharded "
                          "over expert-DP); use one of the two");
    }
    if (p.expert_tensor_parallel() != 1) {
      return recipe_error(r, key,
                          "not supported yet with expert_tensor_parallel_size > 1: replicas "
                          "are whole experts");
    }
    if (r.model.moe.moe_token_dispatcher_type != "alltoall") {
      return recipe_error(r, key, "needs moe.moe_token_dispatcher_type alltoall");
    }
  }
  if (p.virtual_pipeline_model_parallel_size > 0 && p.pipeline_model_parallel_size == 1) {
    return recipe_error(r, "parallel.virtual_pipeline_model_parallel_size",
                        "needs parallel.pipeline_model_parallel_size > 1");
  }
  return absl::OkStatus();
}

// data_path is one prefix or "weight prefix" pairs with positive weights (as data/ reads it).
absl::Status validate_data_path(const Recipe& r) {
  const std::vector<std::string>& tokens = r.data.data_path;
  if (tokens.size() == 1 && !is_number(tokens[0])) return absl::OkStatus();
  double weight = 0;
  for (size_t i = 0; i < tokens.size(); i += 2) {
    if (i + 1 >= tokens.size() || !absl::SimpleAtod(tokens[i], &weight) || !(weight > 0) ||
        is_number(tokens[i + 1])) {
      return recipe_error(r, "data.data_path",
                          "expected one prefix or positive \"weight prefix\" pairs, e.g. "
                          "\"0.8 a 0.2 b\"");
    }
  }
  return absl::OkStatus();
}

absl::Status validate_data(const Recipe& r) {
  const DataConfig& d = r.data;
  if (d.data_path.empty() && d.corpus.empty()) {
    return recipe_error(r, "data.data_path", "no training data: set data.data_path or data.corpus");
  }
  if (absl::Status status = validate_data_path(r); !status.ok()) return status;
  if (d.tokenizer_type == "null" && r.model.vocab_size == 0) {
    return recipe_error(r, "data.tokenizer_type", "null needs model.vocab_size > 0");
  }
  const std::vector<std::string> parts = absl::StrSplit(d.split, absl::ByAnyChar(",/"));
  double total = 0;
  for (const std::string& part : parts) {
    double weight = 0;
    if (parts.size() > 3 || !absl::SimpleAtod(part, &weight) || weight < 0) {
      return recipe_error(r, "data.split",
                          absl::StrCat("\"", d.split,
                                       "\" is not up to three non-negative weights "
                                       "separated by , or /, e.g. \"969,30,1\""));
    }
    total += weight;
  }
  if (total <= 0) return recipe_error(r, "data.split", "the weights sum to 0");
  if (d.reset_position_ids) {
    return recipe_error(r, "data.reset_position_ids", "not supported yet: must be false");
  }
  return absl::OkStatus();
}

absl::Status validate_checkpoint(const Recipe& r) {
  const CheckpointConfig& c = r.checkpoint;
  if (c.save.empty() && c.save_interval > 0) {
    return recipe_error(r, "checkpoint.save_interval", "needs a checkpoint.save directory");
  }
  if (c.save.empty() && c.keep_last > 0) {
    return recipe_error(r, "checkpoint.keep_last", "needs a checkpoint.save directory");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status recipe_error(const Recipe& recipe, absl::string_view key_path,
                          absl::string_view reason) {
  const auto found = recipe.key_locations.find(std::string(key_path));
  if (found != recipe.key_locations.end()) {
    if (absl::StartsWith(found->second, "--set ")) {
      return absl::InvalidArgumentError(absl::StrCat(found->second, ": ", reason));
    }
    return absl::InvalidArgumentError(absl::StrCat(found->second, ": ", key_path, ": ", reason));
  }
  if (recipe.source.empty())
    return absl::InvalidArgumentError(absl::StrCat(key_path, ": ", reason));
  return absl::InvalidArgumentError(absl::StrCat(recipe.source, ": ", key_path, ": ", reason));
}

absl::Status validate_recipe(const Recipe& recipe) {
  for (auto check :
       {validate_model, validate_moe, validate_training, validate_data, validate_checkpoint}) {
    if (absl::Status status = check(recipe); !status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status validate_recipe_for_world(const Recipe& recipe, int world_size) {
  if (absl::Status status = validate_recipe(recipe); !status.ok()) return status;
  const std::string where = recipe.source.empty() ? "recipe" : recipe.source;
  if (world_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("world size ", world_size, " must be ≥ 1"));
  }
  const ParallelConfig& p = recipe.parallel;
  const ModelConfig& m = recipe.model;
  // An unknown vocabulary (0 = from the tokenizer) is checked once the trainer has filled it.
  const int padded_vocab = m.vocab_size > 0 ? m.padded_vocab_size() : p.tensor_model_parallel_size;
  absl::Status status = validate_parallel_config(p, world_size);
  if (status.ok()) {
    status = validate_model_divisibility(p, m.num_layers, m.num_attention_heads, m.kv_heads(),
                                         m.moe.num_experts, padded_vocab);
  }
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": parallel: ", status.message()));
  }
  if (absl::StatusOr<StagePartition> split = partition_layers(m.num_layers, p); !split.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", split.status().message()));
  }
  // Context parallelism: 2·CP load-balanced chunks per sequence (model/context_shard.h), each
  // CP shard split again over TP under sequence parallelism.
  if (const int cp = p.context_parallel_size; cp > 1) {
    const bool sequence_parallel = p.sequence_parallel && p.tensor_model_parallel_size > 1;
    const int64_t divisor =
        2 * int64_t{cp} * (sequence_parallel ? p.tensor_model_parallel_size : 1);
    if (m.seq_length % divisor != 0) {
      return recipe_error(
          recipe, "model.seq_length",
          absl::StrCat(m.seq_length, " is not divisible by 2 × parallel.context_parallel_size ",
                       cp,
                       sequence_parallel
                           ? absl::StrCat(" × parallel.tensor_model_parallel_size ",
                                          p.tensor_model_parallel_size, " (sequence_parallel)")
                           : "",
                       " = ", divisor));
    }
  }
  const int data_parallel = world_size / (p.tensor_model_parallel_size * p.context_parallel_size *
                                          p.pipeline_model_parallel_size);
  const TrainingConfig& t = recipe.training;
  if (t.global_batch_size > 0 && t.global_batch_size % (t.micro_batch_size * data_parallel) != 0) {
    return recipe_error(
        recipe, "training.global_batch_size",
        absl::StrCat(t.global_batch_size,
                     " is not a multiple of "
                     "training.micro_batch_size ",
                     t.micro_batch_size, " × data-parallel size ", data_parallel, " = ",
                     t.micro_batch_size * data_parallel, " (world size ", world_size, ")"));
  }
  return absl::OkStatus();
}

}  // namespace moefold
