// Which transformer layers each pipeline stage and model chunk owns: a pure function of the layer
// count and the parallel settings (no MPI), as Megatron-Core's get_transformer_layer_offset.
//
// The model is cut into PP·V consecutive pieces (virtual stages, pipeline_schedule.h); piece
// v = chunk·PP + stage lives on pipeline rank `stage` as its model chunk `chunk`. Even by default;
// parallel.decoder_first_pipeline_num_layers / decoder_last_pipeline_num_layers give the first /
// last stage its own layer count (split evenly over its V chunks) and the middle stages share
// the rest evenly. The first stage's chunk 0 also owns the embedding; the last stage's last chunk
// owns the final norm, the LM head and the loss.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "parallel/parallel_config.h"

namespace moefold {

struct LayerRange {  // global layer indices [begin, end)
  int begin = 0;
  int end = 0;

  int size() const { return end - begin; }
  bool contains(int layer) const { return layer >= begin && layer < end; }
  bool operator==(const LayerRange&) const = default;
};

class StagePartition {
 public:
  // ranges (pp_size · chunks), in virtual-stage order chunk·pp_size + stage, consecutive from 0.
  StagePartition(int pp_size, int chunks, std::vector<LayerRange> ranges);

  int pp_size() const { return pp_size_; }
  int chunks() const { return chunks_; }  // V; 1 without interleaving
  int num_layers() const { return ranges_.back().end; }

  LayerRange layers(int stage, int chunk) const;
  int num_layers_on_stage(int stage) const;  // over all of its chunks
  // The (stage, chunk) holding a global layer.
  int stage_of_layer(int layer) const;
  int chunk_of_layer(int layer) const;

  // The first virtual stage: token embedding. The last: final norm, LM head and loss. With tied
  // embeddings both hold the word embedding, and their two gradients are summed over
  // ParallelContext::embedding so the copies stay identical.
  bool owns_embedding(int stage, int chunk) const { return stage == 0 && chunk == 0; }
  bool owns_output(int stage, int chunk) const {
    return stage == pp_size_ - 1 && chunk == chunks_ - 1;
  }

 private:
  int virtual_stage_of_layer(int layer) const;

  int pp_size_;
  int chunks_;
  std::vector<LayerRange> ranges_;
};

// Splits model.num_layers over config's pipeline_model_parallel_size stages and
// virtual_pipeline_model_parallel_size chunks. The error is one line naming the setting, e.g.
// "parallel.decoder_first_pipeline_num_layers 3 is not divisible by
// parallel.virtual_pipeline_model_parallel_size 2".
absl::StatusOr<StagePartition> partition_layers(int num_layers, const ParallelConfig& config);

}  // namespace moefold
