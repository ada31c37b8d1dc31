// The model hyper-parameters of MODEL.md. Filled from a recipe's `model` and `moe` sections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moefold {

enum class RouterScoreFunction { kSoftmax, kSigmoid };
enum class LoadBalancingType { kAuxLoss, kSeqAuxLoss, kNone };
enum class TokenDropPolicy { kProbs, kPosition };

struct MoeConfig {
  int num_experts = 0;                 // E; 0 = no MoE layers
  int moe_ffn_hidden_size = 0;         // F
  int moe_router_topk = 2;             // k
  // moe_layer_freq n > 0: layer l is MoE iff l % n == 0; 0: the recipe gave an explicit 0/1
  // list, kept in moe_layer_pattern. The recipe loader expands n into moe_layer_pattern.
  int moe_layer_freq = 1;
  std::vector<int> moe_layer_pattern;  // per layer 1 = MoE, derived from moe_layer_freq
  RouterScoreFunction moe_router_score_function = RouterScoreFunction::kSoftmax;
  bool moe_router_pre_softmax = false;
  int moe_router_num_groups = 0;
  int moe_router_group_topk = 0;
  float moe_router_topk_scaling_factor = 0.0f;  // 0 = unset
  LoadBalancingType moe_router_load_balancing_type = LoadBalancingType::kAuxLoss;
  float moe_aux_loss_coeff = 0.0f;
  float moe_z_loss_coeff = 0.0f;
  bool moe_router_enable_expert_bias = false;
  float moe_router_bias_update_rate = 1e-3f;
  float moe_expert_capacity_factor = 0.0f;  // 0 = unset = dropless
  TokenDropPolicy moe_token_drop_policy = TokenDropPolicy::kProbs;
  bool moe_pad_expert_input_to_capacity = false;
  std::string moe_token_dispatcher_type = "alltoall";
  int moe_shared_expert_intermediate_size = 0;  // Fs; 0 = no shared expert
};

struct ModelConfig {
  int num_layers = 2;            // L
  int hidden_size = 64;          // H
  int num_attention_heads = 4;   // nh
  int num_query_groups = 0;      // nkv; 0 = nh (no GQA)
  int kv_channels = 0;           // d, the head dim; 0 = hidden_size / num_attention_heads
  bool qk_layernorm = false;     // RMSNorm over each query and key head before RoPE
  int ffn_hidden_size = 256;     // Fd
  int vocab_size = 0;            // tokenizer vocabulary (before padding)
  int make_vocab_size_divisible_by = 128;
  int seq_length = 128;          // S
  float norm_epsilon = 1e-5f;
  float rotary_base = 10000.0f;
  float init_method_std = 0.02f;
  bool untie_embeddings_and_output_weights = false;  // Megatron default: tied
  MoeConfig moe;

  int kv_heads() const { return num_query_groups > 0 ? num_query_groups : num_attention_heads; }
  int head_dim() const { return kv_channels > 0 ? kv_channels : hidden_size / num_attention_heads; }
  int padded_vocab_size() const {
    const int m = make_vocab_size_divisible_by > 0 ? make_vocab_size_divisible_by : 1;
    return (vocab_size + m - 1) / m * m;
  }
  bool is_moe_layer(int layer) const {
    return moe.num_experts > 0 && layer < static_cast<int>(moe.moe_layer_pattern.size()) &&
           moe.moe_layer_pattern[layer] == 1;
  }
};

}  // namespace moefold
