// The tiny model the whole-model tests share: 2 layers (0 dense, 1 MoE), hidden 16, 4 heads over
// 2 KV groups, 4 experts top-2, a shared expert, V = 64.
#pragma once

#include "model/model_config.h"

namespace moefold::testing {

inline ModelConfig tiny_model_config(bool untied = false) {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.ffn_hidden_size = 24;
  c.vocab_size = 50;
  c.make_vocab_size_divisible_by = 16;  // V = 64
  c.seq_length = 6;
  c.init_method_std = 0.3f;
  c.untie_embeddings_and_output_weights = untied;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_router_topk = 2;
  c.moe.moe_layer_pattern = {0, 1};
  c.moe.moe_shared_expert_intermediate_size = 8;
  c.moe.moe_aux_loss_coeff = 0.1f;
  c.moe.moe_z_loss_coeff = 0.01f;
  return c;
}

}  // namespace moefold::testing
