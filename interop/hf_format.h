// The Hugging Face transformers formats moefold models map to exactly: tensor names and shapes,
// config.json, and the refusals where a format has no place for what a moefold model computes
// (never a silent change of the model).
//
// Both formats compute MODEL.md's transformer: RMSNorm (x / sqrt(mean x² + eps) · w), rotate-half
// RoPE with inv_freq = base^(-2i/d), causal GQA attention scaled by 1/sqrt(d), SwiGLU experts,
// softmax router over E, top-k:
//   mixtral    renormalises the k chosen probabilities (= moefold's post-softmax router); every
//              layer is MoE; no shared expert.
//   qwen2_moe  norm_topk_prob true = post-softmax, false = moefold's pre-softmax router; dense
//              layers through mlp_only_layers. Its q/k/v projections carry biases (written as
//              zeros) and its shared expert is gated by sigmoid(shared_expert_gate · x), which
//              moefold's ungated shared expert cannot equal: a moefold model without a shared
//              expert gets a zero one of size 1 (output exactly 0); one with a shared expert is
//              refused.
//   qwen3_moe  as qwen2_moe without biases or shared expert, with q_norm, k_norm [head_dim]: an
//              RMSNorm over each query and key head before RoPE (moefold's model.qk_layernorm,
//              required), and head_dim from model.kv_channels.
//   olmoe      normalises q and k over all heads at once (q_norm [nh·d]), which moefold's per-head
//              q/k norms cannot equal: always refused.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_config.h"

namespace moefold {

enum class HfFormat { kMixtral, kQwen2Moe, kQwen3Moe, kOlmoe };

absl::StatusOr<HfFormat> parse_hf_format(std::string_view name);  // "mixtral", ...
const char* hf_format_name(HfFormat format);                      // also config's model_type

// OK when `config` maps exactly onto `format`, else one line naming the feature that has no
// place there, e.g. "mixtral has no place for a shared expert
// (moe.moe_shared_expert_intermediate_size 64)".
absl::Status check_hf_compatible(const ModelConfig& config, HfFormat format);

// One tensor of the Hugging Face checkpoint and where its values live in moefold's.
struct HfTensor {
  std::string hf_name;         // "model.layers.0.block_sparse_moe.experts.3.w1.weight"
  std::vector<int64_t> shape;  // [out, in] as in moefold (both use the PyTorch convention)
  std::string source;          // MODEL.md name; empty: all zeros (biases, the zero shared expert)
  int expert = -1;             // >= 0: slice [expert] of the source's leading E axis
};

// Every tensor of `format` for `config` (check_hf_compatible must have passed), in the order
// they are written: embedding, then layer by layer, then the final norm and head.
std::vector<HfTensor> hf_tensor_plan(const ModelConfig& config, HfFormat format);

// Token ids config.json and generation_config.json name; -1 = none.
struct HfTokenIds {
  int64_t bos = -1, eos = -1;
};

// config.json: architectures, model_type and every key that decides the computation.
// vocab_size is the padded V, so the exported model computes exactly what was trained.
nlohmann::ordered_json hf_config_json(const ModelConfig& config, HfFormat format,
                                      const HfTokenIds& ids);

// Checks a checkpoint's config.json (read from `path`) against the model the recipe builds: the
// format from model_type, then each key, with one line naming the first that differs, e.g.
// "hf/config.json: num_local_experts is 8, the recipe has moe.num_experts 4".
absl::StatusOr<HfFormat> check_hf_config(const nlohmann::json& hf_config, const std::string& path,
                                         const ModelConfig& expected);

}  // namespace moefold
