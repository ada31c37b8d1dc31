// The recipe schema table, written with the typed key builders of config_keys.h. Defaults are
// not repeated here: they are the struct defaults of the *_config.h headers, read back via `show`.
#include "trainer/config_schema.h"

#include <algorithm>

#include "trainer/config_keys.h"

namespace moefold {
namespace {

using namespace recipe_keys;

std::vector<RecipeKey> build_schema() {
  std::vector<RecipeKey> keys;
  auto add = [&keys](RecipeKey key) { keys.push_back(std::move(key)); };
  using R = Recipe;

  // model
  add(number_key(
      "model.num_layers", [](R& r) -> auto& { return r.model.num_layers; }, 1, kMaxInt,
      "Transformer layers L."));
  add(number_key(
      "model.hidden_size", [](R& r) -> auto& { return r.model.hidden_size; }, 1, kMaxInt,
      "Hidden size H; must be divisible by num_attention_heads unless kv_channels is set."));
  add(number_key(
      "model.num_attention_heads", [](R& r) -> auto& { return r.model.num_attention_heads; }, 1,
      kMaxInt, "Query heads nh."));
  add(number_key(
      "model.num_query_groups", [](R& r) -> auto& { return r.model.num_query_groups; }, 0, kMaxInt,
      "Key/value heads nkv for grouped-query attention; 0 = num_attention_heads (no "
      "GQA). Must divide num_attention_heads."));
  add(number_key(
      "model.kv_channels", [](R& r) -> auto& { return r.model.kv_channels; }, 0, kMaxInt,
      "Head dimension d of queries, keys and values; 0 = hidden_size / num_attention_heads. "
      "Must be even (RoPE)."));
  add(bool_key(
      "model.qk_layernorm", [](R& r) -> auto& { return r.model.qk_layernorm; },
      "RMSNorm over each query and key head (weights q_norm, k_norm of size d) after the "
      "projections and before RoPE, as Qwen3 and Megatron's --qk-layernorm."));
  add(number_key(
      "model.ffn_hidden_size", [](R& r) -> auto& { return r.model.ffn_hidden_size; }, 0, kMaxInt,
      "Hidden size Fd of the dense SwiGLU MLP (dense layers only)."));
  add(number_key(
      "model.vocab_size", [](R& r) -> auto& { return r.model.vocab_size; }, 0, kMaxInt,
      "Tokenizer vocabulary before padding; 0 = take it from the tokenizer "
      "(50257 for gpt2)."));
  add(number_key(
      "model.make_vocab_size_divisible_by",
      [](R& r) -> auto& { return r.model.make_vocab_size_divisible_by; }, 1, kMaxInt,
      "The vocabulary is padded up to a multiple of this (independent of TP)."));
  add(number_key(
      "model.seq_length", [](R& r) -> auto& { return r.model.seq_length; }, 1, kMaxInt,
      "Sequence length S in tokens."));
  add(number_key(
      "model.norm_epsilon", [](R& r) -> auto& { return r.model.norm_epsilon; }, 0, 1,
      "RMSNorm epsilon."));
  add(number_key(
      "model.rotary_base", [](R& r) -> auto& { return r.model.rotary_base; }, 1, kInf,
      "RoPE base frequency."));
  add(number_key(
      "model.init_method_std", [](R& r) -> auto& { return r.model.init_method_std; }, 0, kInf,
      "Standard deviation of the normal weight initialisation."));
  add(bool_key(
      "model.untie_embeddings_and_output_weights",
      [](R& r) -> auto& { return r.model.untie_embeddings_and_output_weights; },
      "Use a separate lm_head instead of the input embedding."));

  // moe
  add(number_key(
      "moe.num_experts", [](R& r) -> auto& { return r.model.moe.num_experts; }, 0, kMaxInt,
      "Routed experts E per MoE layer; 0 = dense model (no MoE layers)."));
  add(number_key(
      "moe.moe_ffn_hidden_size", [](R& r) -> auto& { return r.model.moe.moe_ffn_hidden_size; }, 0,
      kMaxInt, "Hidden size F of each routed expert's SwiGLU MLP."));
  add(number_key(
      "moe.moe_router_topk", [](R& r) -> auto& { return r.model.moe.moe_router_topk; }, 1, kMaxInt,
      "Experts k chosen per token; at most num_experts."));
  add(moe_layer_freq_key());
  add(enum_key(
      "moe.moe_router_score_function",
      [](R& r) -> auto& { return r.model.moe.moe_router_score_function; }, {"softmax", "sigmoid"},
      "Router score function (MODEL.md)."));
  add(bool_key(
      "moe.moe_router_pre_softmax",
      [](R& r) -> auto& { return r.model.moe.moe_router_pre_softmax; },
      "Softmax over all experts before top-k, gates not renormalised (softmax only)."));
  add(number_key(
      "moe.moe_router_num_groups", [](R& r) -> auto& { return r.model.moe.moe_router_num_groups; },
      0, kMaxInt, "Expert groups G for group-limited routing; 0 = off. Must divide num_experts."));
  add(number_key(
      "moe.moe_router_group_topk", [](R& r) -> auto& { return r.model.moe.moe_router_group_topk; },
      0, kMaxInt,
      "Groups gk kept per token with group-limited routing; must divide "
      "moe_router_topk."));
  add(number_key(
      "moe.moe_router_topk_scaling_factor",
      [](R& r) -> auto& { return r.model.moe.moe_router_topk_scaling_factor; }, 0, kInf,
      "Gate weights are multiplied by this; 0 = unset (no scaling)."));
  add(enum_key(
      "moe.moe_router_load_balancing_type",
      [](R& r) -> auto& { return r.model.moe.moe_router_load_balancing_type; },
      {"aux_loss", "seq_aux_loss", "none"}, "Load-balancing loss (MODEL.md)."));
  add(number_key(
      "moe.moe_aux_loss_coeff", [](R& r) -> auto& { return r.model.moe.moe_aux_loss_coeff; }, 0,
      kInf, "Coefficient of the load-balancing loss."));
  add(number_key(
      "moe.moe_z_loss_coeff", [](R& r) -> auto& { return r.model.moe.moe_z_loss_coeff; }, 0, kInf,
      "Coefficient of the router z-loss; 0 = off."));
  add(bool_key(
      "moe.moe_router_enable_expert_bias",
      [](R& r) -> auto& { return r.model.moe.moe_router_enable_expert_bias; },
      "Aux-loss-free balancing with a per-expert routing bias (sigmoid only)."));
  add(number_key(
      "moe.moe_router_bias_update_rate",
      [](R& r) -> auto& { return r.model.moe.moe_router_bias_update_rate; }, 0, kInf,
      "Step size of the expert-bias update after each optimizer step."));
  add(number_key(
      "moe.moe_expert_capacity_factor",
      [](R& r) -> auto& { return r.model.moe.moe_expert_capacity_factor; }, 0, kInf,
      "Expert capacity factor cf; 0 = unset = dropless."));
  add(enum_key(
      "moe.moe_token_drop_policy", [](R& r) -> auto& { return r.model.moe.moe_token_drop_policy; },
      {"probs", "position"}, "Which assignments are kept when an expert is over capacity."));
  add(bool_key(
      "moe.moe_pad_expert_input_to_capacity",
      [](R& r) -> auto& { return r.model.moe.moe_pad_expert_input_to_capacity; },
      "Pad each expert's buffer to its capacity (needs moe_expert_capacity_factor)."));
  add(string_key("moe.moe_token_dispatcher_type",
                 [](R& r) -> auto& { return r.model.moe.moe_token_dispatcher_type; },
                 "Token dispatcher (model/moe_layer.h, parallel/ep_dispatch.h).",
                 {"alltoall", "allgather"}));
  add(number_key(
      "moe.moe_shared_expert_intermediate_size",
      [](R& r) -> auto& { return r.model.moe.moe_shared_expert_intermediate_size; }, 0, kMaxInt,
      "Hidden size Fs of the shared expert; 0 = no shared expert."));

  // parallel
  add(number_key(
      "parallel.tensor_model_parallel_size",
      [](R& r) -> auto& { return r.parallel.tensor_model_parallel_size; }, 1, kMaxInt,
      "Tensor parallel size TP (attention and dense layers)."));
  add(number_key(
      "parallel.context_parallel_size",
      [](R& r) -> auto& { return r.parallel.context_parallel_size; }, 1, kMaxInt,
      "Context parallel size CP."));
  add(number_key(
      "parallel.pipeline_model_parallel_size",
      [](R& r) -> auto& { return r.parallel.pipeline_model_parallel_size; }, 1, kMaxInt,
      "Pipeline parallel size PP."));
  add(number_key(
      "parallel.virtual_pipeline_model_parallel_size",
      [](R& r) -> auto& { return r.parallel.virtual_pipeline_model_parallel_size; }, 0, kMaxInt,
      "Model chunks per pipeline stage (interleaved 1F1B); 0 = plain 1F1B."));
  add(bool_key(
      "parallel.zero_bubble_pipeline",
      [](R& r) -> auto& { return r.parallel.zero_bubble_pipeline; },
      "Zero-bubble 1F1B (ZB-H1): each backward computes the input gradient first and its weight "
      "gradients later, where 1F1B would wait; same activation memory as 1F1B."));
  add(number_key(
      "parallel.decoder_first_pipeline_num_layers",
      [](R& r) -> auto& { return r.parallel.decoder_first_pipeline_num_layers; }, 0, kMaxInt,
      "Transformer layers on the first pipeline stage (uneven split); 0 = an even share."));
  add(number_key(
      "parallel.decoder_last_pipeline_num_layers",
      [](R& r) -> auto& { return r.parallel.decoder_last_pipeline_num_layers; }, 0, kMaxInt,
      "Transformer layers on the last pipeline stage (uneven split); 0 = an even share."));
  add(number_key(
      "parallel.expert_model_parallel_size",
      [](R& r) -> auto& { return r.parallel.expert_model_parallel_size; }, 1, kMaxInt,
      "Expert parallel size EP; must divide num_experts."));
  add(number_key(
      "parallel.expert_tensor_parallel_size",
      [](R& r) -> auto& { return r.parallel.expert_tensor_parallel_size; }, 0, kMaxInt,
      "Tensor parallel size ETP inside each expert; 0 = same as TP."));
  add(bool_key(
      "parallel.sequence_parallel", [](R& r) -> auto& { return r.parallel.sequence_parallel; },
      "Shard activations outside the TP regions along the sequence."));
  add(string_key(
      "parallel.order", [](R& r) -> auto& { return r.parallel.order; },
      "Rank order of the parallel axes, first axis fastest (a permutation of tp, cp, "
      "ep, dp, pp)."));
  add(bool_key(
      "parallel.use_distributed_optimizer",
      [](R& r) -> auto& { return r.parallel.use_distributed_optimizer; },
      "Shard optimizer state over the data-parallel ranks."));
  add(bool_key(
      "parallel.overlap_grad_reduce", [](R& r) -> auto& { return r.parallel.overlap_grad_reduce; },
      "Overlap gradient reduction with the backward pass."));
  add(bool_key(
      "parallel.overlap_param_gather",
      [](R& r) -> auto& { return r.parallel.overlap_param_gather; },
      "Overlap the parameter all-gather with the next forward (needs "
      "use_distributed_optimizer)."));
  add(number_key(
      "parallel.ddp_bucket_size", [](R& r) -> auto& { return r.parallel.ddp_bucket_size; }, 1,
      kInf, "Elements per gradient-reduction bucket."));
  add(number_key(
      "parallel.moe_a2a_overlap_chunks",
      [](R& r) -> auto& { return r.parallel.moe_a2a_overlap_chunks; }, 1, kMaxInt,
      "Chunks the expert all-to-all is split into to overlap it with expert compute."));
  add(number_key(
      "parallel.tp_comm_overlap_chunks",
      [](R& r) -> auto& { return r.parallel.tp_comm_overlap_chunks; }, 1, kMaxInt,
      "Row chunks of the row-parallel layers' output GEMM, each chunk's TP all-reduce (or "
      "reduce-scatter) in flight while the next is computed; 1 = no overlap."));
  add(bool_key(
      "parallel.moe_fssdp", [](R& r) -> auto& { return r.parallel.moe_fssdp; },
      "Fully Sharded Sparse Data Parallelism for the routed experts: their weights, gradients "
      "and optimizer state are sharded over expert-DP; each micro-batch gathers only the "
      "experts its tokens reach and reduce-scatters their gradients (moe_ffn_hidden_size must "
      "divide by ETP × expert-DP)."));
  add(number_key(
      "parallel.fssdp_spare_slots",
      [](R& r) -> auto& { return r.parallel.fssdp_spare_slots; }, 0, kMaxInt,
      "Load-driven FSSDP (Hecate's expert placement): per MoE layer and micro-batch each EP "
      "rank may also hold this many replicas of other ranks' hot experts, placed where the "
      "recent routing load says they lower the busiest rank's tokens; owners keep the "
      "weights, gradients and Adam state as under EP. 0 = plain EP."));
  add(number_key(
      "parallel.fssdp_overlap_degree",
      [](R& r) -> auto& { return r.parallel.fssdp_overlap_degree; }, 0, kMaxInt,
      "Load-driven FSSDP: expert copies one rank may send, and receive, per MoE layer and "
      "micro-batch (so the gather fits behind the compute before the experts); 0 = no limit."));
  add(bool_key(
      "parallel.fssdp_rematerialise",
      [](R& r) -> auto& { return r.parallel.fssdp_rematerialise; },
      "Load-driven FSSDP: free the replicas after forward and gather them again before "
      "backward (less memory, twice the gather traffic)."));
  add(number_key(
      "parallel.distributed_timeout_minutes",
      [](R& r) -> auto& { return r.parallel.distributed_timeout_minutes; }, 0, kInf,
      "Every blocking wait on a collective or point-to-point message ends the job after this "
      "many minutes (fractions allowed), each rank naming where it waited; 0 = wait forever."));
  add(enum_key(
      "parallel.communicator", [](R& r) -> auto& { return r.parallel.communicator; },
      {"auto", "nccl", "mpi"},
      "Library of the rank groups' communication: nccl (GPU buffers directly; needs "
      "training.device: cuda and a build with NCCL, one GPU per rank), mpi (GPU buffers staged "
      "through host memory), or auto = nccl when each rank has its own GPU, else mpi."));

  // training
  add(number_key(
      "training.micro_batch_size", [](R& r) -> auto& { return r.training.micro_batch_size; }, 1,
      kMaxInt, "Sequences per micro-batch on one rank."));
  add(number_key(
      "training.global_batch_size", [](R& r) -> auto& { return r.training.global_batch_size; }, 0,
      kMaxInt,
      "Sequences per optimizer step over all ranks; a multiple of micro_batch_size × DP. "
      "0 = micro_batch_size × DP."));
  add(number_key(
      "training.train_iters", [](R& r) -> auto& { return r.training.train_iters; }, 1, kMaxInt,
      "Optimizer steps to train for."));
  add(number_key(
      "training.eval_interval", [](R& r) -> auto& { return r.training.eval_interval; }, 0, kMaxInt,
      "Evaluate on the validation split every this many steps; 0 = never."));
  add(number_key(
      "training.eval_iters", [](R& r) -> auto& { return r.training.eval_iters; }, 0, kMaxInt,
      "Global batches per evaluation."));
  add(number_key(
      "training.seed", [](R& r) -> auto& { return r.training.seed; }, 0, kInf,
      "Seed of initialisation and data shuffling."));
  add(number_key(
      "training.blas_threads", [](R& r) -> auto& { return r.training.blas_threads; }, 1, kMaxInt,
      "BLAS threads per rank (CPU backend)."));
  add(number_key(
      "training.peak_flops", [](R& r) -> auto& { return r.training.peak_flops; }, 0, kInf,
      "Peak FLOP/s of one rank for MFU; 0 = measure an sgemm at start-up."));
  add(enum_key(
      "training.recompute_granularity",
      [](R& r) -> auto& { return r.training.recompute_granularity; },
      {"none", "full", "selective"},
      "Activation recomputation: full keeps only each layer's input in forward and re-runs the "
      "layer before its backward (less memory, about a third more compute). selective is "
      "refused: the attention keeps no (S,S) scores to drop."));
  add(enum_key(
      "training.device", [](R& r) -> auto& { return r.training.device; }, {"cpu", "cuda"},
      "Where each rank computes: cpu, or cuda (one GPU per rank: the rank's index among the "
      "ranks of its node)."));
  add(bool_key(
      "training.share_devices", [](R& r) -> auto& { return r.training.share_devices; },
      "With training.device: cuda, let several ranks of a node share one GPU when a node has "
      "more ranks than GPUs (tests, debugging); otherwise that is an error."));
  add(bool_key(
      "training.bf16", [](R& r) -> auto& { return r.training.bf16; },
      "bf16 mixed precision (MODEL.md): float32 master weights, gradients, Adam state and "
      "checkpoints; bf16 compute copies of the weights (the router's excepted) and bf16 "
      "activations and communication. Runs on every backend (on CPU: bf16 storage, float32 "
      "arithmetic; on CUDA: bf16 GEMMs and attention on tensor cores). FSSDP expert gathers "
      "move the owners' bf16 compute copies (half the bytes); their gradients stay float32."));
  add(number_key(
      "training.exit_duration_in_mins",
      [](R& r) -> auto& { return r.training.exit_duration_in_mins; }, 0, kInf,
      "Stop at the first step boundary after this many minutes of training, saving a "
      "checkpoint when checkpoint.save is set (to end before a job's time limit); 0 = no limit."));
  add(enum_key(
      "training.nonfinite", [](R& r) -> auto& { return r.training.nonfinite; }, {"stop", "skip"},
      "A step whose loss or gradient is not finite: stop, naming the first non-finite tensor "
      "(the loss, which layer's gradient, or the router), or skip its optimizer step "
      "(parameters, optimizer state and expert biases unchanged, the batch consumed)."));
  add(number_key(
      "training.nonfinite_max_consecutive_skips",
      [](R& r) -> auto& { return r.training.nonfinite_max_consecutive_skips; }, 0, kMaxInt,
      "With nonfinite: skip, the run stops when more steps than this in a row were skipped."));

  // optimizer
  add(string_key("optimizer.optimizer", [](R& r) -> auto& { return r.optimizer.optimizer; },
                 "AdamW with decoupled weight decay (the only optimizer so far).", {"adam"}));
  add(number_key(
      "optimizer.lr", [](R& r) -> auto& { return r.optimizer.lr; }, 0, kInf,
      "Peak learning rate."));
  add(number_key(
      "optimizer.min_lr", [](R& r) -> auto& { return r.optimizer.min_lr; }, 0, kInf,
      "Learning rate at the end of the decay; at most lr."));
  add(number_key(
      "optimizer.lr_warmup_iters", [](R& r) -> auto& { return r.optimizer.lr_warmup_iters; }, 0,
      kMaxInt, "Linear warm-up steps."));
  add(number_key(
      "optimizer.lr_decay_iters", [](R& r) -> auto& { return r.optimizer.lr_decay_iters; }, 0,
      kMaxInt, "Step at which the decay reaches min_lr; 0 = train_iters."));
  add(enum_key(
      "optimizer.lr_decay_style", [](R& r) -> auto& { return r.optimizer.lr_decay_style; },
      {"cosine", "linear", "constant"}, "Learning-rate decay after warm-up."));
  add(number_key(
      "optimizer.weight_decay", [](R& r) -> auto& { return r.optimizer.weight_decay; }, 0, kInf,
      "Decoupled weight decay (not applied to norm weights)."));
  add(number_key(
      "optimizer.adam_beta1", [](R& r) -> auto& { return r.optimizer.adam_beta1; }, 0, 1,
      "Adam β1."));
  add(number_key(
      "optimizer.adam_beta2", [](R& r) -> auto& { return r.optimizer.adam_beta2; }, 0, 1,
      "Adam β2."));
  add(number_key(
      "optimizer.adam_eps", [](R& r) -> auto& { return r.optimizer.adam_eps; }, 0, kInf,
      "Adam epsilon."));
  add(number_key(
      "optimizer.clip_grad", [](R& r) -> auto& { return r.optimizer.clip_grad; }, 0, kInf,
      "Clip the global gradient norm to this; 0 = no clipping."));

  // data
  add(data_path_key());
  add(string_key(
      "data.split", [](R& r) -> auto& { return r.data.split; },
      "Train,valid,test weights, e.g. \"969,30,1\"."));
  add(string_key("data.tokenizer_type", [](R& r) -> auto& { return r.data.tokenizer_type; },
                 "Tokenizer: GPT-2 byte-level BPE, a Hugging Face tokenizer.json (BPE, byte-level "
                 "or SentencePiece-style with byte fallback), a SentencePiece .model, raw bytes, or null for data tokenized "
                 "elsewhere (then model.vocab_size must be set).",
                 {"gpt2", "huggingface", "sentencepiece", "byte", "null"}));
  add(string_key(
      "data.vocab_file", [](R& r) -> auto& { return r.data.vocab_file; },
      "GPT-2 encoder.json (empty = the installed default); the tokenizer.json for huggingface; "
      "the .model for sentencepiece."));
  add(string_key(
      "data.merge_file", [](R& r) -> auto& { return r.data.merge_file; },
      "GPT-2 vocab.bpe; empty = the installed default."));
  add(string_key(
      "data.data_cache_path", [](R& r) -> auto& { return r.data.data_cache_path; },
      "Where sample indices are cached; empty = beside the data."));
  add(string_key("data.corpus", [](R& r) -> auto& { return r.data.corpus; },
                 "Built-in corpus to fetch and preprocess: sotu (State of the Union addresses); "
                 "\"\" = use data_path.",
                 {"", "sotu"}));
  add(bool_key(
      "data.reset_position_ids", [](R& r) -> auto& { return r.data.reset_position_ids; },
      "Restart positions at each document (not supported yet; must stay false)."));
  add(bool_key(
      "data.eod_mask_loss", [](R& r) -> auto& { return r.data.eod_mask_loss; },
      "No loss on end-of-document labels."));

  // checkpoint
  add(string_key(
      "checkpoint.save", [](R& r) -> auto& { return r.checkpoint.save; },
      "Directory to save checkpoints to; empty = never save."));
  add(number_key(
      "checkpoint.save_interval", [](R& r) -> auto& { return r.checkpoint.save_interval; }, 0,
      kMaxInt, "Save every this many steps; 0 = no periodic saves."));
  add(number_key(
      "checkpoint.keep_last", [](R& r) -> auto& { return r.checkpoint.keep_last; }, 0, kMaxInt,
      "Keep only the newest this many checkpoints; 0 = keep all."));
  add(string_key(
      "checkpoint.load", [](R& r) -> auto& { return r.checkpoint.load; },
      "Directory to resume from; empty = start fresh."));

  // logging
  add(number_key(
      "logging.log_interval", [](R& r) -> auto& { return r.logging.log_interval; }, 1, kMaxInt,
      "Print a progress line every this many steps."));
  add(string_key(
      "logging.metrics_path", [](R& r) -> auto& { return r.logging.metrics_path; },
      "JSON-lines metrics file; empty = <run_dir>/metrics.jsonl."));
  add(string_key(
      "logging.run_dir", [](R& r) -> auto& { return r.logging.run_dir; },
      "Directory for this run's outputs."));
  add(bool_key(
      "logging.all_ranks", [](R& r) -> auto& { return r.logging.all_ranks; },
      "Every rank prints, not only rank 0."));
  return keys;
}

}  // namespace

const std::vector<std::string>& recipe_sections() {
  static const std::vector<std::string> sections = {"model",     "moe",  "parallel",   "training",
                                                    "optimizer", "data", "checkpoint", "logging"};
  return sections;
}

const std::vector<RecipeKey>& recipe_schema() {
  static const std::vector<RecipeKey> keys = build_schema();
  return keys;
}

const RecipeKey* find_recipe_key(absl::string_view path) {
  for (const RecipeKey& key : recipe_schema()) {
    if (key.path == path) return &key;
  }
  return nullptr;
}

}  // namespace moefold
