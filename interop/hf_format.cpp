#include "interop/hf_format.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold {
namespace {

// The float's shortest decimal (1e-05, not 9.99999974738e-06): read back as float it is the
// same float, which is what transformers' float32 arithmetic uses.
double short_decimal(float value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), value).ptr;
  return std::stod(std::string(text, end));
}

bool all_moe_layers(const ModelConfig& c) {
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) return false;
  }
  return true;
}

std::vector<int> dense_layers(const ModelConfig& c) {
  std::vector<int> out;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) out.push_back(l);
  }
  return out;
}

absl::Status refuse(HfFormat format, const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(hf_format_name(format), " has no place for ", what));
}

}  // namespace

absl::StatusOr<HfFormat> parse_hf_format(std::string_view name) {
  if (name == "mixtral") return HfFormat::kMixtral;
  if (name == "qwen2_moe") return HfFormat::kQwen2Moe;
  if (name == "qwen3_moe") return HfFormat::kQwen3Moe;
  if (name == "olmoe") return HfFormat::kOlmoe;
  return absl::InvalidArgumentError(absl::StrCat("unknown format '", std::string(name),
                                                 "' (expected mixtral, qwen2_moe, qwen3_moe or "
                                                 "olmoe)"));
}

const char* hf_format_name(HfFormat format) {
  switch (format) {
    case HfFormat::kMixtral: return "mixtral";
    case HfFormat::kQwen2Moe: return "qwen2_moe";
    case HfFormat::kQwen3Moe: return "qwen3_moe";
    case HfFormat::kOlmoe: return "olmoe";
  }
  return "?";
}

absl::Status check_hf_compatible(const ModelConfig& c, HfFormat format) {
  const MoeConfig& m = c.moe;
  if (format == HfFormat::kOlmoe) {
    return absl::FailedPreconditionError(
        "olmoe normalises q and k over all heads at once (q_norm of size heads × head dim) and "
        "moefold's model.qk_layernorm normalises each head, so no moefold model maps to olmoe "
        "exactly; use mixtral, qwen2_moe or qwen3_moe");
  }
  if (m.num_experts == 0) return refuse(format, "a model without MoE layers (moe.num_experts 0)");
  if (m.moe_router_score_function != RouterScoreFunction::kSoftmax) {
    return refuse(format, "a sigmoid router (moe.moe_router_score_function sigmoid)");
  }
  if (m.moe_router_enable_expert_bias) {
    return refuse(format, "an expert bias (moe.moe_router_enable_expert_bias)");
  }
  if (m.moe_router_num_groups > 0) {
    return refuse(format, absl::StrCat("group-limited routing (moe.moe_router_num_groups ",
                                       m.moe_router_num_groups, ")"));
  }
  if (m.moe_router_topk_scaling_factor != 0.0f && m.moe_router_topk_scaling_factor != 1.0f) {
    return refuse(format, absl::StrCat("a gate scaling factor (moe.moe_router_topk_scaling_factor ",
                                       m.moe_router_topk_scaling_factor, ")"));
  }
  if (m.moe_expert_capacity_factor > 0.0f) {
    return refuse(format, absl::StrCat("token dropping (moe.moe_expert_capacity_factor ",
                                       m.moe_expert_capacity_factor,
                                       "): its MoE layers are dropless"));
  }
  const bool qwen3 = format == HfFormat::kQwen3Moe;
  if (format == HfFormat::kQwen2Moe && c.head_dim() * c.num_attention_heads != c.hidden_size) {
    return refuse(format, absl::StrCat("a head dim other than hidden_size / num_attention_heads ",
                                       "(model.kv_channels ", c.kv_channels, ")"));
  }
  if (qwen3 && !c.qk_layernorm) {
    return absl::FailedPreconditionError(
        "qwen3_moe normalises each query and key head (q_norm, k_norm) and this model does not: "
        "set model.qk_layernorm true, or use mixtral or qwen2_moe");
  }
  if (!qwen3 && c.qk_layernorm) {
    return refuse(format, "q/k norms (model.qk_layernorm true); qwen3_moe has them");
  }
  if (qwen3 && m.moe_shared_expert_intermediate_size > 0) {
    return refuse(format, absl::StrCat("a shared expert (moe.moe_shared_expert_intermediate_size ",
                                       m.moe_shared_expert_intermediate_size, ")"));
  }
  if (format == HfFormat::kMixtral) {
    if (!all_moe_layers(c)) {
      return refuse(format, absl::StrCat("dense layers (layers ", absl::StrJoin(dense_layers(c), ", "),
                                         " by moe.moe_layer_freq); every mixtral layer is MoE"));
    }
    if (m.moe_shared_expert_intermediate_size > 0) {
      return refuse(format, absl::StrCat("a shared expert (moe.moe_shared_expert_intermediate_size ",
                                         m.moe_shared_expert_intermediate_size, ")"));
    }
    if (m.moe_router_pre_softmax) {
      return refuse(format, "gates without renormalisation (moe.moe_router_pre_softmax true): "
                            "mixtral renormalises the top-k probabilities; qwen2_moe with "
                            "norm_topk_prob false does not");
    }
  }
  if (format == HfFormat::kQwen2Moe && m.moe_shared_expert_intermediate_size > 0) {
    return refuse(format, absl::StrCat("an ungated shared expert (moe.moe_shared_expert_"
                                       "intermediate_size ", m.moe_shared_expert_intermediate_size,
                                       "): transformers scales qwen2_moe's shared expert by "
                                       "sigmoid(shared_expert_gate · x), which is never 1"));
  }
  return absl::OkStatus();
}

std::vector<HfTensor> hf_tensor_plan(const ModelConfig& c, HfFormat format) {
  const int64_t H = c.hidden_size, V = c.padded_vocab_size(), d = c.head_dim();
  const int64_t q_rows = c.num_attention_heads * d, kv_rows = c.kv_heads() * d;
  const int64_t F = c.moe.moe_ffn_hidden_size, Fd = c.ffn_hidden_size;
  const bool qwen2 = format == HfFormat::kQwen2Moe, qwen3 = format == HfFormat::kQwen3Moe;
  const bool qwen = qwen2 || qwen3;
  std::vector<HfTensor> plan;
  plan.push_back({"model.embed_tokens.weight", {V, H}, "embed"});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string hf = absl::StrCat("model.layers.", l, ".");
    const std::string mf = absl::StrCat("layers/", l, "/");
    plan.push_back({hf + "input_layernorm.weight", {H}, mf + "attn_norm"});
    plan.push_back({hf + "self_attn.q_proj.weight", {q_rows, H}, mf + "attn/wq"});
    plan.push_back({hf + "self_attn.k_proj.weight", {kv_rows, H}, mf + "attn/wk"});
    plan.push_back({hf + "self_attn.v_proj.weight", {kv_rows, H}, mf + "attn/wv"});
    if (qwen2) {
      plan.push_back({hf + "self_attn.q_proj.bias", {q_rows}, ""});
      plan.push_back({hf + "self_attn.k_proj.bias", {kv_rows}, ""});
      plan.push_back({hf + "self_attn.v_proj.bias", {kv_rows}, ""});
    }
    plan.push_back({hf + "self_attn.o_proj.weight", {H, q_rows}, mf + "attn/wo"});
    if (qwen3) {
      plan.push_back({hf + "self_attn.q_norm.weight", {d}, mf + "attn/q_norm"});
      plan.push_back({hf + "self_attn.k_norm.weight", {d}, mf + "attn/k_norm"});
    }
    plan.push_back({hf + "post_attention_layernorm.weight", {H}, mf + "ffn_norm"});
    if (!c.is_moe_layer(l)) {  // qwen formats only (mixtral refused dense layers)
      plan.push_back({hf + "mlp.gate_proj.weight", {Fd, H}, mf + "mlp/w_gate"});
      plan.push_back({hf + "mlp.up_proj.weight", {Fd, H}, mf + "mlp/w_up"});
      plan.push_back({hf + "mlp.down_proj.weight", {H, Fd}, mf + "mlp/w_down"});
      continue;
    }
    const std::string block = hf + (qwen ? "mlp." : "block_sparse_moe.");
    plan.push_back({block + "gate.weight", {c.moe.num_experts, H}, mf + "moe/router"});
    for (int j = 0; j < c.moe.num_experts; ++j) {
      const std::string expert = absl::StrCat(block, "experts.", j, ".");
      plan.push_back({expert + (qwen ? "gate_proj" : "w1") + ".weight", {F, H},
                      mf + "moe/experts/w_gate", j});
      plan.push_back({expert + (qwen ? "up_proj" : "w3") + ".weight", {F, H},
                      mf + "moe/experts/w_up", j});
      plan.push_back({expert + (qwen ? "down_proj" : "w2") + ".weight", {H, F},
                      mf + "moe/experts/w_down", j});
    }
    if (qwen2) {  // the zero shared expert of size 1: its output is exactly 0
      plan.push_back({block + "shared_expert.gate_proj.weight", {1, H}, ""});
      plan.push_back({block + "shared_expert.up_proj.weight", {1, H}, ""});
      plan.push_back({block + "shared_expert.down_proj.weight", {H, 1}, ""});
      plan.push_back({block + "shared_expert_gate.weight", {1, H}, ""});
    }
  }
  plan.push_back({"model.norm.weight", {H}, "final_norm"});
  if (c.untie_embeddings_and_output_weights) plan.push_back({"lm_head.weight", {V, H}, "lm_head"});
  return plan;
}

nlohmann::ordered_json hf_config_json(const ModelConfig& c, HfFormat format,
                                      const HfTokenIds& ids) {
  const MoeConfig& m = c.moe;
  const bool qwen2 = format == HfFormat::kQwen2Moe, qwen3 = format == HfFormat::kQwen3Moe;
  const bool qwen = qwen2 || qwen3;
  nlohmann::ordered_json j;
  j["architectures"] = {qwen3   ? "Qwen3MoeForCausalLM"
                        : qwen2 ? "Qwen2MoeForCausalLM"
                                : "MixtralForCausalLM"};
  j["model_type"] = hf_format_name(format);
  j["vocab_size"] = c.padded_vocab_size();
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = qwen ? c.ffn_hidden_size : m.moe_ffn_hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.kv_heads();
  if (!qwen2) j["head_dim"] = c.head_dim();
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.seq_length;
  j["initializer_range"] = short_decimal(c.init_method_std);
  j["rms_norm_eps"] = short_decimal(c.norm_epsilon);
  j["rope_theta"] = short_decimal(c.rotary_base);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", short_decimal(c.rotary_base)}};
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = !c.untie_embeddings_and_output_weights;
  j["num_experts_per_tok"] = m.moe_router_topk;
  j["output_router_logits"] = false;
  j["router_aux_loss_coef"] = short_decimal(m.moe_aux_loss_coeff);
  if (qwen) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_layers;
    j["decoder_sparse_step"] = 1;
    j["mlp_only_layers"] = dense_layers(c);
    j["moe_intermediate_size"] = m.moe_ffn_hidden_size;
    if (qwen2) j["shared_expert_intermediate_size"] = 1;
    j["num_experts"] = m.num_experts;
    j["norm_topk_prob"] = !m.moe_router_pre_softmax;
    if (qwen2) j["qkv_bias"] = true;
    if (qwen3) j["attention_bias"] = false;
  } else {
    j["sliding_window"] = nullptr;
    j["num_local_experts"] = m.num_experts;
    j["router_jitter_noise"] = 0.0;
  }
  // null, not absent: transformers' defaults (Mixtral's 1 and 2) belong to other vocabularies.
  j["bos_token_id"] = ids.bos >= 0 ? nlohmann::json(ids.bos) : nlohmann::json(nullptr);
  j["eos_token_id"] = ids.eos >= 0 ? nlohmann::json(ids.eos) : nlohmann::json(nullptr);
  j["use_cache"] = true;
  j["torch_dtype"] = "float32";
  return j;
}

namespace {

std::string json_text(const nlohmann::json& v) { return v.is_null() ? "absent" : v.dump(); }

// Values equal as transformers uses them: numbers as float32 (eps, rope base), the rest exactly.
bool same_value(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number() && b.is_number()) {
    return static_cast<float>(a.get<double>()) == static_cast<float>(b.get<double>());
  }
  return a == b;
}

// The value of `key`, or `fallback` when the file leaves it to transformers' default.
nlohmann::json value_or(const nlohmann::json& config, const char* key, nlohmann::json fallback) {
  return config.contains(key) && !config[key].is_null() ? config[key] : fallback;
}

// Which layers transformers builds as MoE (1) or dense MLP (0).
std::vector<int> qwen_sparse_pattern(const nlohmann::json& config, int layers) {
  const nlohmann::json dense = value_or(config, "mlp_only_layers", nlohmann::json::array());
  const int step = value_or(config, "decoder_sparse_step", 1).get<int>();
  std::vector<int> pattern;
  for (int l = 0; l < layers; ++l) {
    bool listed = false;
    for (const auto& d : dense) listed = listed || (d.is_number_integer() && d.get<int>() == l);
    pattern.push_back(!listed && step > 0 && (l + 1) % step == 0 ? 1 : 0);
  }
  return pattern;
}

}  // namespace

absl::StatusOr<HfFormat> check_hf_config(const nlohmann::json& hf, const std::string& path,
                                         const ModelConfig& c) {
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (!hf.is_object() || !hf.contains("model_type") || !hf["model_type"].is_string()) {
    return bad("not a transformers config (no model_type)");
  }
  auto format = parse_hf_format(hf["model_type"].get<std::string>());
  if (!format.ok()) {
    return bad(absl::StrCat("model_type '", hf["model_type"].get<std::string>(),
                            "' is not one moefold reads (mixtral, qwen2_moe, qwen3_moe)"));
  }
  if (absl::Status s = check_hf_compatible(c, *format); !s.ok()) {
    return bad(absl::StrCat("the recipe's model cannot be loaded from it: ", s.message()));
  }
  const bool qwen2 = *format == HfFormat::kQwen2Moe;
  const bool qwen = qwen2 || *format == HfFormat::kQwen3Moe;
  const nlohmann::ordered_json want = hf_config_json(c, *format, {});
  struct Key {
    const char* hf;
    const char* recipe;
    nlohmann::json fallback;  // transformers' default when the file leaves the key out
  };
  std::vector<Key> keys = {
      {"vocab_size", "the padded vocabulary (model.vocab_size rounded up)", nullptr},
      {"hidden_size", "model.hidden_size", nullptr},
      {"num_hidden_layers", "model.num_layers", nullptr},
      {"num_attention_heads", "model.num_attention_heads", nullptr},
      {"num_key_value_heads", "model.num_query_groups", nullptr},
      {"rms_norm_eps", "model.norm_epsilon", nullptr},
      {"tie_word_embeddings", "model.untie_embeddings_and_output_weights (negated)", false},
      {"num_experts_per_tok", "moe.moe_router_topk", nullptr},
      {"hidden_act", "SwiGLU (silu)", "silu"},
  };
  if (qwen) {
    keys.push_back({"num_experts", "moe.num_experts", nullptr});
    keys.push_back({"moe_intermediate_size", "moe.moe_ffn_hidden_size", nullptr});
    keys.push_back({"norm_topk_prob", "moe.moe_router_pre_softmax (negated)", false});
    if (qwen2) {
      keys.push_back({"shared_expert_intermediate_size",
                      "no shared expert (only a zero one of size 1 maps)", nullptr});
    } else {
      keys.push_back({"attention_bias", "projections without biases", false});
    }
    keys.push_back({"use_sliding_window", "full causal attention", false});
    if (!dense_layers(c).empty()) {
      keys.push_back({"intermediate_size", "model.ffn_hidden_size", nullptr});
    }
  } else {
    keys.push_back({"num_local_experts", "moe.num_experts", nullptr});
    keys.push_back({"intermediate_size", "moe.moe_ffn_hidden_size", nullptr});
    keys.push_back({"sliding_window", "full causal attention (null)", nullptr});
  }
  if (!qwen2) {  // transformers' default head dim is hidden / heads
    keys.push_back({"head_dim", "model.kv_channels", c.hidden_size / c.num_attention_heads});
  }
  for (const Key& key : keys) {
    const nlohmann::json got = value_or(hf, key.hf, key.fallback);
    if (!same_value(got, want[key.hf])) {
      return bad(absl::StrCat(key.hf, " is ", json_text(got), ", the recipe has ",
                              json_text(want[key.hf]), " (", key.recipe, ")"));
    }
  }
  // RoPE: the base from rope_parameters (transformers 5) or rope_theta; no scaling.
  nlohmann::json theta = value_or(hf, "rope_theta", nullptr);
  if (hf.contains("rope_parameters") && hf["rope_parameters"].is_object()) {
    const nlohmann::json& rope = hf["rope_parameters"];
    theta = value_or(rope, "rope_theta", theta);
    if (value_or(rope, "rope_type", "default") != "default") {
      return bad(absl::StrCat("rope_parameters.rope_type is ", rope["rope_type"].dump(),
                              "; moefold's RoPE is the default (unscaled) one"));
    }
  }
  if (hf.contains("rope_scaling") && !hf["rope_scaling"].is_null()) {
    return bad("rope_scaling is set; moefold's RoPE is the default (unscaled) one");
  }
  if (!same_value(theta, want["rope_theta"])) {
    return bad(absl::StrCat("rope_theta is ", json_text(theta), ", the recipe has ",
                            json_text(want["rope_theta"]), " (model.rotary_base)"));
  }
  if (qwen) {
    const std::vector<int> pattern = qwen_sparse_pattern(hf, c.num_layers);
    for (int l = 0; l < c.num_layers; ++l) {
      if (pattern[l] != (c.is_moe_layer(l) ? 1 : 0)) {
        return bad(absl::StrCat("layer ", l, " is ", pattern[l] ? "MoE" : "dense",
                                " by mlp_only_layers and decoder_sparse_step, ",
                                pattern[l] ? "dense" : "MoE", " by the recipe's moe.moe_layer_freq"));
      }
    }
  }
  return *format;
}

}  // namespace moefold
