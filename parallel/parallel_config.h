// The `parallel` section of a recipe: sizes of every parallel dimension and how DP behaves.
#pragma once

#include <cstdint>
#include <string>

namespace moefold {

// Which library carries the rank groups' communication: NCCL (GPU buffers, built with CUDA)
// or MPI (host staging for GPU buffers); auto = NCCL when the ranks train on their own GPUs.
enum class CommunicatorBackend { kAuto, kNccl, kMpi };

struct ParallelConfig {
  int tensor_model_parallel_size = 1;    // TP (attention side)
  int context_parallel_size = 1;         // CP
  int pipeline_model_parallel_size = 1;  // PP
  int virtual_pipeline_model_parallel_size = 0;  // 0 = plain 1F1B
  bool zero_bubble_pipeline = false;  // 1F1B with deferred weight gradients (ZB-H1)
  // Uneven pipeline split (model/stage_partition.h): transformer layers on the first / last
  // stage; 0 = an even share like the middle stages.
  int decoder_first_pipeline_num_layers = 0;
  int decoder_last_pipeline_num_layers = 0;
  int expert_model_parallel_size = 1;    // EP (expert side)
  int expert_tensor_parallel_size = 0;   // ETP; 0 = same as TP
  bool sequence_parallel = false;
  std::string order = "tp-cp-ep-dp-pp";  // first axis fastest, as Megatron-Core's RankGenerator
  bool use_distributed_optimizer = false;
  bool overlap_grad_reduce = false;
  bool overlap_param_gather = false;
  int64_t ddp_bucket_size = 40000000;    // elements per gradient bucket
  int moe_a2a_overlap_chunks = 1;
  int tp_comm_overlap_chunks = 1;  // row chunks of the row-parallel exits (TpRegion)
  // Fully Sharded Sparse Data Parallelism (Hecate) for the routed experts: weights, gradients and
  // optimizer state sharded over expert-DP; each micro-batch gathers only the experts it needs.
  bool moe_fssdp = false;
  // Load-driven FSSDP (Hecate's placement, parallel/expert_placement.h): per MoE layer and
  // micro-batch each EP rank may also hold this many replicas of other ranks' hot experts;
  // 0 = plain EP. Overlap degree: expert copies a rank sends or receives per layer (0 = no
  // limit). Re-materialise: free the replicas after forward and gather them again for backward.
  int fssdp_spare_slots = 0;
  int fssdp_overlap_degree = 0;
  bool fssdp_rematerialise = false;
  // Every blocking wait on communication ends the job after this long (parallel/watchdog.h);
  // Megatron's --distributed-timeout-minutes. 0 = wait forever.
  double distributed_timeout_minutes = 10;
  CommunicatorBackend communicator = CommunicatorBackend::kAuto;

  int expert_tensor_parallel() const {
    return expert_tensor_parallel_size > 0 ? expert_tensor_parallel_size
                                           : tensor_model_parallel_size;
  }
};

}  // namespace moefold
