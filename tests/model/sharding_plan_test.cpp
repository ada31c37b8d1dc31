#include "model/sharding_plan.h"

#include <gtest/gtest.h>

#include "gradient_check.h"
#include "model/model.h"

namespace moefold {
namespace {

TEST(ShardingPlan, StylesOfModelNames) {
  EXPECT_EQ(sharding_style("embed"), ShardStyle::kVocab);
  EXPECT_EQ(sharding_style("lm_head"), ShardStyle::kVocab);
  EXPECT_EQ(sharding_style("layers/3/attn/wq"), ShardStyle::kColumnwise);
  EXPECT_EQ(sharding_style("layers/3/attn/wo"), ShardStyle::kRowwise);
  EXPECT_EQ(sharding_style("layers/0/mlp/w_up"), ShardStyle::kColumnwise);
  EXPECT_EQ(sharding_style("layers/0/mlp/w_down"), ShardStyle::kRowwise);
  EXPECT_EQ(sharding_style("layers/1/moe/shared/w_down"), ShardStyle::kRowwise);
  EXPECT_EQ(sharding_style("layers/1/moe/experts/w_gate"), ShardStyle::kExpertColumnwise);
  EXPECT_EQ(sharding_style("layers/1/moe/experts/w_down"), ShardStyle::kExpertRowwise);
  EXPECT_EQ(sharding_style("layers/1/moe/router"), ShardStyle::kReplicated);
  EXPECT_EQ(sharding_style("layers/1/moe/expert_bias"), ShardStyle::kReplicated);
  EXPECT_EQ(sharding_style("layers/1/attn_norm"), ShardStyle::kReplicated);
  EXPECT_EQ(sharding_style("final_norm"), ShardStyle::kReplicated);
  EXPECT_EQ(sharding_style("not_embed"), ShardStyle::kReplicated);  // whole components only
}

TEST(ShardingPlan, LayoutsFollowCoordinates) {
  RankCoordinates c;
  c.tp_size = 2;
  c.tp_rank = 1;
  c.ep_size = 4;
  c.ep_rank = 2;
  c.etp_size = 2;
  c.etp_rank = 1;
  const TensorLayout wo = shard_layout("layers/0/attn/wo", {16, 32}, c);
  EXPECT_EQ(wo.local_shape, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(wo.local_offset, (std::vector<int64_t>{0, 16}));
  ASSERT_EQ(wo.splits.size(), 1u);
  EXPECT_EQ(wo.splits[0].group, ShardGroup::kTensor);
  const TensorLayout down = shard_layout("layers/1/moe/experts/w_down", {8, 16, 6}, c);
  EXPECT_EQ(down.local_shape, (std::vector<int64_t>{2, 16, 3}));
  EXPECT_EQ(down.local_offset, (std::vector<int64_t>{4, 0, 3}));
  // FSSDP splits the ETP slice's F axis again over expert-DP.
  c.edp_size = 3;
  c.edp_rank = 2;
  const TensorLayout down_shard = fully_sharded_expert_layout(down, c);
  EXPECT_EQ(down_shard.local_shape, (std::vector<int64_t>{2, 16, 1}));
  EXPECT_EQ(down_shard.local_offset, (std::vector<int64_t>{4, 0, 5}));
  const TensorLayout gate_shard =
      fully_sharded_expert_layout(shard_layout("layers/1/moe/experts/w_gate", {8, 6, 16}, c), c);
  EXPECT_EQ(gate_shard.local_shape, (std::vector<int64_t>{2, 1, 16}));
  EXPECT_EQ(gate_shard.local_offset, (std::vector<int64_t>{4, 5, 0}));
  EXPECT_EQ(gate_shard.splits.back().group, ShardGroup::kExpertData);
  const TensorLayout router = shard_layout("layers/1/moe/router", {8, 16}, c);
  EXPECT_EQ(router.local_shape, router.global_shape);
  EXPECT_TRUE(router.splits.empty());
  // One process: everything is replicated.
  const TensorLayout single = shard_layout("embed", {64, 16}, RankCoordinates{});
  EXPECT_EQ(single.local_shape, single.global_shape);
  EXPECT_TRUE(single.splits.empty());
}

TEST(ModelValidate, NamesTheOffendingSetting) {
  const ParallelContext ctx = testing::test_context();
  ModelConfig c;
  c.vocab_size = 100;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_layer_pattern = {1, 1};
  EXPECT_TRUE(Model::validate(c, ctx).ok()) << Model::validate(c, ctx);
  ModelConfig bad = c;
  bad.hidden_size = 30;
  EXPECT_EQ(Model::validate(bad, ctx).message(),
            "hidden_size 30 is not divisible by num_attention_heads 4 and no kv_channels is given");
  bad.kv_channels = 6;  // an explicit head dim frees hidden_size from the heads
  EXPECT_TRUE(Model::validate(bad, ctx).ok()) << Model::validate(bad, ctx);
  bad.kv_channels = 7;
  EXPECT_EQ(Model::validate(bad, ctx).message(), "head dim 7 must be even for rotary embeddings");
  bad = c;
  bad.moe.moe_router_topk = 5;
  EXPECT_EQ(Model::validate(bad, ctx).message(), "moe_router_topk 5 must be in [1, num_experts 4]");
  bad = c;
  bad.moe.moe_router_enable_expert_bias = true;
  EXPECT_FALSE(Model::validate(bad, ctx).ok());
  bad = c;
  bad.moe.moe_router_num_groups = 3;
  bad.moe.moe_router_group_topk = 1;
  EXPECT_EQ(Model::validate(bad, ctx).message(),
            "num_experts 4 is not divisible by moe_router_num_groups 3");
  ParallelContext tp2 = ctx;
  tp2.coords.tp_size = 2;
  EXPECT_TRUE(Model::validate(c, tp2).ok()) << Model::validate(c, tp2);
  ParallelContext tp3 = ctx;
  tp3.coords.tp_size = 3;
  EXPECT_EQ(Model::validate(c, tp3).message(),
            "num_attention_heads 4 is not divisible by tensor_model_parallel_size 3");
  ParallelContext sp4 = ctx;
  sp4.coords.tp_size = 4;
  sp4.config.sequence_parallel = true;
  c.seq_length = 6;
  EXPECT_EQ(Model::validate(c, sp4).message(),
            "seq_length (sequence_parallel) 6 is not divisible by tensor_model_parallel_size 4");
  ParallelContext fssdp = ctx;
  fssdp.config.moe_fssdp = true;
  fssdp.coords.edp_size = 3;
  EXPECT_EQ(Model::validate(c, fssdp).message(),
            "moe_ffn_hidden_size 8 is not divisible by expert_tensor_parallel_size 1 x "
            "expert-data-parallel size 3 (parallel.moe_fssdp)");
}

}  // namespace
}  // namespace moefold
