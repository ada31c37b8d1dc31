// Stage partitioning: hand-worked splits, a sweep against Megatron-Core's layer-offset formula
// (get_transformer_layer_offset) written out independently, and the error for each bad setting.
#include "model/stage_partition.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace moefold {
namespace {

ParallelConfig pipeline(int pp, int vpp = 0, int first = 0, int last = 0) {
  ParallelConfig config;
  config.pipeline_model_parallel_size = pp;
  config.virtual_pipeline_model_parallel_size = vpp;
  config.decoder_first_pipeline_num_layers = first;
  config.decoder_last_pipeline_num_layers = last;
  return config;
}

// Every (stage, chunk) range, stage-major, as "s.c:[begin,end)".
std::string describe(const StagePartition& p) {
  std::string out;
  for (int stage = 0; stage < p.pp_size(); ++stage) {
    for (int chunk = 0; chunk < p.chunks(); ++chunk) {
      const LayerRange r = p.layers(stage, chunk);
      absl::StrAppend(&out, out.empty() ? "" : " ", stage, ".", chunk, ":[", r.begin, ",", r.end,
                      ")");
    }
  }
  return out;
}

std::string split(int num_layers, const ParallelConfig& config) {
  auto p = partition_layers(num_layers, config);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? describe(*p) : "";
}

std::string error(int num_layers, const ParallelConfig& config) {
  auto p = partition_layers(num_layers, config);
  EXPECT_FALSE(p.ok());
  return p.ok() ? "" : std::string(p.status().message());
}

TEST(StagePartition, EvenSplits) {
  EXPECT_EQ(split(3, pipeline(1)), "0.0:[0,3)");
  EXPECT_EQ(split(8, pipeline(4)), "0.0:[0,2) 1.0:[2,4) 2.0:[4,6) 3.0:[6,8)");
  // Interleaved: chunk c of stage s is virtual stage c·PP + s.
  EXPECT_EQ(split(8, pipeline(2, 2)), "0.0:[0,2) 0.1:[4,6) 1.0:[2,4) 1.1:[6,8)");
}

TEST(StagePartition, UnevenSplits) {
  EXPECT_EQ(split(10, pipeline(4, 0, 1, 3)), "0.0:[0,1) 1.0:[1,4) 2.0:[4,7) 3.0:[7,10)");
  EXPECT_EQ(split(7, pipeline(3, 0, 1, 0)), "0.0:[0,1) 1.0:[1,4) 2.0:[4,7)");
  EXPECT_EQ(split(7, pipeline(3, 0, 0, 1)), "0.0:[0,3) 1.0:[3,6) 2.0:[6,7)");
  EXPECT_EQ(split(5, pipeline(2, 0, 2, 3)), "0.0:[0,2) 1.0:[2,5)");
  // First stage 2 layers (1 per chunk), last 6 (3 per chunk), the middle one 8 (4 per chunk).
  EXPECT_EQ(split(16, pipeline(3, 2, 2, 6)),
            "0.0:[0,1) 0.1:[8,9) 1.0:[1,5) 1.1:[9,13) 2.0:[5,8) 2.1:[13,16)");
}

TEST(StagePartition, OwnersOfLayersEmbeddingAndOutput) {
  auto p = partition_layers(16, pipeline(3, 2, 2, 6));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->num_layers(), 16);
  EXPECT_EQ(p->num_layers_on_stage(0), 2);
  EXPECT_EQ(p->num_layers_on_stage(1), 8);
  EXPECT_EQ(p->num_layers_on_stage(2), 6);
  EXPECT_EQ(p->stage_of_layer(9), 1);
  EXPECT_EQ(p->chunk_of_layer(9), 1);
  EXPECT_EQ(p->stage_of_layer(7), 2);
  EXPECT_EQ(p->chunk_of_layer(7), 0);
  EXPECT_TRUE(p->owns_embedding(0, 0));
  EXPECT_FALSE(p->owns_embedding(0, 1));
  EXPECT_TRUE(p->owns_output(2, 1));
  EXPECT_FALSE(p->owns_output(2, 0));
  EXPECT_FALSE(p->owns_output(0, 1));
}

// Megatron-Core's offset of (stage, chunk) and its layer count, from its formula.
LayerRange megatron_layers(int num_layers, int pp, int chunks, int first, int last, int stage,
                           int chunk) {
  const int first_chunk = first / chunks, last_chunk = last / chunks;
  const int middle_stages = pp - (first > 0) - (last > 0);
  const int middle_round = (num_layers - first - last) / chunks;  // middle layers per chunk round
  const int per_middle = middle_stages > 0 ? middle_round / middle_stages : 0;
  int offset = chunk * (first_chunk + middle_round + last_chunk);
  if (stage > 0) offset += first_chunk + (stage - (first > 0 ? 1 : 0)) * per_middle;
  int size = per_middle;
  if (stage == 0 && first > 0) size = first_chunk;
  if (stage == pp - 1 && last > 0) size = last_chunk;
  return {offset, offset + size};
}

TEST(StagePartition, SweepMatchesMegatronCoreOffsets) {
  int accepted = 0, rejected = 0;
  for (int pp = 1; pp <= 6; ++pp) {
    for (int vpp : {0, 2, 3}) {
      const int chunks = std::max(1, vpp);
      for (int layers = 1; layers <= 24; ++layers) {
        for (int first = 0; first <= layers; ++first) {
          for (int last = 0; first + last <= layers + 1; ++last) {
            SCOPED_TRACE(absl::StrCat("L ", layers, " PP ", pp, " VPP ", vpp, " first ", first,
                                      " last ", last));
            auto p = partition_layers(layers, pipeline(pp, vpp, first, last));
            if (!p.ok()) {
              const std::string message(p.status().message());
              EXPECT_TRUE(message.find("parallel.") != std::string::npos ||
                          message.find("model.num_layers") != std::string::npos)
                  << message;
              ++rejected;
              continue;
            }
            ++accepted;
            ASSERT_EQ(p->num_layers(), layers);
            for (int stage = 0; stage < pp; ++stage) {
              for (int chunk = 0; chunk < chunks; ++chunk) {
                const LayerRange r = p->layers(stage, chunk);
                EXPECT_EQ(r, megatron_layers(layers, pp, chunks, first, last, stage, chunk));
                EXPECT_GE(r.size(), 1);
                for (int l = r.begin; l < r.end; ++l) {
                  EXPECT_EQ(p->stage_of_layer(l), stage);
                  EXPECT_EQ(p->chunk_of_layer(l), chunk);
                }
              }
            }
            if (first > 0) {
              EXPECT_EQ(p->num_layers_on_stage(0), first);
            }
            if (last > 0) {
              EXPECT_EQ(p->num_layers_on_stage(pp - 1), last);
            }
          }
        }
      }
    }
  }
  EXPECT_GT(accepted, 300);
  EXPECT_GT(rejected, 300);
}

TEST(StagePartition, ErrorsNameTheSetting) {
  EXPECT_EQ(error(4, pipeline(1, 0, 2, 0)),
            "parallel.decoder_first_pipeline_num_layers 2 needs "
            "parallel.pipeline_model_parallel_size > 1");
  EXPECT_EQ(error(12, pipeline(3, 2, 3, 0)),
            "parallel.decoder_first_pipeline_num_layers 3 is not divisible by "
            "parallel.virtual_pipeline_model_parallel_size 2");
  EXPECT_EQ(error(12, pipeline(3, 0, 0, 13)),
            "parallel.decoder_last_pipeline_num_layers 13 is more than model.num_layers 12");
  EXPECT_EQ(error(6, pipeline(3, 0, 4, 3)),
            "parallel.decoder_first_pipeline_num_layers 4 + "
            "parallel.decoder_last_pipeline_num_layers 3 = 7 is more than model.num_layers 6");
  EXPECT_EQ(error(6, pipeline(4)),
            "model.num_layers 6 cannot be split evenly over "
            "parallel.pipeline_model_parallel_size 4");
  EXPECT_EQ(error(12, pipeline(4, 2)),
            "model.num_layers 12 cannot be split evenly over "
            "parallel.pipeline_model_parallel_size 4 x "
            "parallel.virtual_pipeline_model_parallel_size 2");
  EXPECT_EQ(error(2, pipeline(4)),
            "model.num_layers 2 is fewer than the 4 pieces of "
            "parallel.pipeline_model_parallel_size 4 (each needs a layer)");
  EXPECT_EQ(error(10, pipeline(3, 0, 3, 0)),
            "the 7 layers left by model.num_layers 10 - "
            "parallel.decoder_first_pipeline_num_layers 3 cannot be split evenly over 2 middle "
            "stage(s)");
  EXPECT_EQ(error(6, pipeline(2, 0, 3, 2)),
            "the 1 layers left by model.num_layers 6 - parallel.decoder_first_pipeline_num_layers "
            "3 - parallel.decoder_last_pipeline_num_layers 2 have no stage: "
            "parallel.pipeline_model_parallel_size 2 leaves no middle stage");
  EXPECT_EQ(error(4, pipeline(2, 0, -1, 0)),
            "parallel.decoder_first_pipeline_num_layers -1 is negative");
}

}  // namespace
}  // namespace moefold
