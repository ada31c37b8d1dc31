#include "checkpoint/config_attributes.h"

#include <optional>

#include "absl/strings/str_cat.h"

namespace moefold {
namespace {

const char* score_function_name(RouterScoreFunction f) {
  return f == RouterScoreFunction::kSigmoid ? "sigmoid" : "softmax";
}

const char* load_balancing_name(LoadBalancingType t) {
  switch (t) {
    case LoadBalancingType::kAuxLoss:
      return "aux_loss";
    case LoadBalancingType::kSeqAuxLoss:
      return "seq_aux_loss";
    case LoadBalancingType::kNone:
      return "none";
  }
  return "?";
}

const char* drop_policy_name(TokenDropPolicy p) {
  return p == TokenDropPolicy::kPosition ? "position" : "probs";
}

int64_t flag(bool b) { return b ? 1 : 0; }

// Keys added after checkpoints were first written: the value an older checkpoint's model has.
std::optional<Hdf5Attribute> implied_by_older_checkpoint(const std::string& name,
                                                         const ModelConfig& c) {
  if (name == "model.kv_channels") return int64_t{c.hidden_size / c.num_attention_heads};
  if (name == "model.qk_layernorm") return flag(false);
  return std::nullopt;
}

}  // namespace

std::vector<ConfigAttribute> model_config_attributes(const ModelConfig& c) {
  const MoeConfig& m = c.moe;
  const bool moe = m.num_experts > 0;
  std::vector<int64_t> pattern(m.moe_layer_pattern.begin(), m.moe_layer_pattern.end());
  if (!moe) pattern.clear();  // no MoE layers: the pattern is irrelevant
  return {
      {"model.num_layers", int64_t{c.num_layers}},
      {"model.hidden_size", int64_t{c.hidden_size}},
      {"model.num_attention_heads", int64_t{c.num_attention_heads}},
      {"model.num_query_groups", int64_t{c.kv_heads()}},
      {"model.kv_channels", int64_t{c.head_dim()}},
      {"model.qk_layernorm", flag(c.qk_layernorm)},
      {"model.ffn_hidden_size", int64_t{c.ffn_hidden_size}},
      {"model.padded_vocab_size", int64_t{c.padded_vocab_size()}},
      {"model.vocab_size", int64_t{c.vocab_size}, false},
      {"model.make_vocab_size_divisible_by", int64_t{c.make_vocab_size_divisible_by}, false},
      {"model.seq_length", int64_t{c.seq_length}, false},
      {"model.norm_epsilon", double{c.norm_epsilon}},
      {"model.rotary_base", double{c.rotary_base}},
      {"model.init_method_std", double{c.init_method_std}, false},
      {"model.untie_embeddings_and_output_weights", flag(c.untie_embeddings_and_output_weights)},
      {"moe.num_experts", int64_t{m.num_experts}},
      {"moe.moe_ffn_hidden_size", int64_t{moe ? m.moe_ffn_hidden_size : 0}},
      {"moe.moe_router_topk", int64_t{moe ? m.moe_router_topk : 0}},
      {"moe.moe_layer_pattern", pattern},
      {"moe.moe_router_score_function",
       std::string(moe ? score_function_name(m.moe_router_score_function) : "")},
      {"moe.moe_router_pre_softmax", flag(moe && m.moe_router_pre_softmax)},
      {"moe.moe_router_num_groups", int64_t{moe ? m.moe_router_num_groups : 0}},
      {"moe.moe_router_group_topk", int64_t{moe ? m.moe_router_group_topk : 0}},
      {"moe.moe_router_topk_scaling_factor", double{moe ? m.moe_router_topk_scaling_factor : 0.0f}},
      {"moe.moe_router_enable_expert_bias", flag(moe && m.moe_router_enable_expert_bias)},
      {"moe.moe_shared_expert_intermediate_size",
       int64_t{moe ? m.moe_shared_expert_intermediate_size : 0}},
      {"moe.moe_router_load_balancing_type",
       std::string(load_balancing_name(m.moe_router_load_balancing_type)), false},
      {"moe.moe_aux_loss_coeff", double{m.moe_aux_loss_coeff}, false},
      {"moe.moe_z_loss_coeff", double{m.moe_z_loss_coeff}, false},
      {"moe.moe_router_bias_update_rate", double{m.moe_router_bias_update_rate}, false},
      {"moe.moe_expert_capacity_factor", double{m.moe_expert_capacity_factor}, false},
      {"moe.moe_token_drop_policy", std::string(drop_policy_name(m.moe_token_drop_policy)), false},
      {"moe.moe_pad_expert_input_to_capacity", flag(m.moe_pad_expert_input_to_capacity), false},
      {"moe.moe_token_dispatcher_type", m.moe_token_dispatcher_type, false},
  };
}

absl::Status check_model_config(const Hdf5File& file, const ModelConfig& expected) {
  for (const ConfigAttribute& want : model_config_attributes(expected)) {
    if (!want.must_match) continue;
    auto stored = file.read_attribute(want.name);
    if (absl::IsNotFound(stored.status())) {
      if (auto implied = implied_by_older_checkpoint(want.name, expected)) stored = *implied;
    }
    if (absl::IsNotFound(stored.status())) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), ": not a moefold model checkpoint: model config attribute '",
                       want.name, "' is missing"));
    }
    if (!stored.ok()) return stored.status();
    if (*stored != want.value) {
      return absl::InvalidArgumentError(absl::StrCat(
          file.path(), ": model config mismatch: ", want.name, " is ", format_attribute(*stored),
          " in the checkpoint, ", format_attribute(want.value), " in the recipe"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moefold
