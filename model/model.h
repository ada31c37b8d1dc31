// The MoE transformer of MODEL.md on this rank: embedding, layers, final norm, LM head and loss,
// with the parameter registry. Under pipeline parallelism the rank holds only its pipeline
// stage's model chunks (model/stage_partition.h): the layers of each chunk, the embedding on the
// first virtual stage, the final norm, LM head and loss on the last. Forward/backward run one
// (micro-batch, chunk) at a time with activations passed in and out; they live in a caller-owned
// ModelStash (one per chunk) so several micro-batches can be in flight. Without pipeline
// parallelism the single chunk is the whole model and forward/backward are its one-chunk case.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "model/token_batch.h"
#include "model/embedding.h"
#include "model/lm_head.h"
#include "model/model_config.h"
#include "model/parameter.h"
#include "model/stage_partition.h"
#include "model/transformer_layer.h"
#include "parallel/context.h"
#include "tensor/tensor.h"

namespace moefold {

struct LossScales {  // MODEL.md "Global loss": the step's normalisation, known before forward
  // d loss / d (CE of one unmasked token) = 1 / (Σ loss_mask over the whole global batch)
  double lm = 1.0;
  double aux = 1.0;  // weight of this micro-batch's balance+z losses = 1 / (M·D)
};

struct MoeLayerStats {
  int layer;
  std::vector<int64_t> tokens_per_expert;
  int64_t dropped = 0;
  int64_t assignments = 0;
};

struct MicroBatchStats {
  // Σ CE·loss_mask (unnormalised) as one float64 on the model's device (ops::float64_zeros), so
  // that the host reads every micro-batch's at once (lm_loss_sums); undefined on the pipeline
  // stages without the LM head.
  Tensor lm_loss_sum;
  double loss_mask_sum = 0;  // Σ loss_mask
  double aux_loss = 0;  // balance losses of this micro-batch (coeff applied, summed over layers)
  double z_loss = 0;    // z losses (coeff applied, summed over layers)
  std::vector<MoeLayerStats> moe;  // one per MoE layer, counts before capacity dropping

  double host_lm_loss_sum() const;  // lm_loss_sum read on the host (a wait for the device)
};

// Each micro-batch's Σ CE·loss_mask on the host (0 without the LM head), read from the device
// with one copy for all of them.
std::vector<double> lm_loss_sums(std::span<const MicroBatchStats> stats);

// Per-(micro-batch, chunk) activations and gradient buffers of the chunk's Lc layers. Reusing one
// stash for later micro-batches of the same shape and chunk reuses its buffers. With activation
// recomputation `layers` is empty: only the residual stream is kept, and each layer's
// activations are rebuilt in the Model's one scratch layer stash just before its backward.
class ModelStash {
 public:
  explicit ModelStash(int num_layers) : layers(num_layers) {}

  int64_t batch = 0, seq = 0;
  bool has_gradients = false;      // forward prepared backward (lm gradient computed)
  double aux_scale = 0;            // LossScales::aux of the forward (for recomputation)
  bool weight_gradients_pending = false;  // backward deferred them (Model::backward_chunk)
  std::vector<int32_t> tokens;     // (N)
  std::vector<int32_t> positions;  // (N) position of each token in its sequence
  std::vector<TransformerLayerStash> layers;
  // The residual stream holds n = N/TP token rows under sequence parallelism, n = N otherwise.
  // residual[i] is the input of the chunk's i-th layer, residual[Lc] its output.
  std::vector<Tensor> residual;  // Lc+1 tensors (n,H)
  Tensor final_h;                // (n,H) rmsnorm(residual[L], final_norm)
  Tensor final_rstd;             // (n)
  Tensor d_final_h;              // (n,H) d loss / d final_h (from the fused loss)
  Tensor dh;                     // (n,H) d loss / d residual stream
  Tensor final_norm_dw;          // (H) final_norm's gradient before the TP sum (SP scratch)
};

class Model {
 public:
  // ctx is copied (copies share the communicators).
  Model(const ModelConfig& config, const ParallelContext& ctx);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  void init_parameters(uint64_t seed);         // MODEL.md init
  // Full activation recomputation (training.recompute_granularity: full): forward keeps only
  // each layer's input; backward re-runs a layer's forward before its backward. The numbers are
  // bit-identical; stashes made afterwards hold no per-layer activations.
  void set_recompute_activations(bool on) { recompute_ = on; }
  // MODEL.md "Mixed precision" (training.bf16): bf16 compute copies of the weights (the router's
  // excepted) and bf16 activations; master weights, gradients and optimizer state stay float32.
  void set_compute_dtype(DType dtype);
  DType activation_dtype() const { return compute_dtype_; }
  // After the parameter values changed (an optimizer step, a load): the compute copies are
  // rounded again from the masters on first use.
  void mark_parameters_changed() { registry_.mark_values_changed(); }
  std::vector<Parameter*> parameters();        // every trainable parameter, fixed order
  std::vector<Tensor*> expert_bias_buffers();  // per MoE layer [E] (empty when disabled)
  std::unique_ptr<ModelStash> make_stash(int chunk = 0) const;

  // Forward of `chunk` for one micro-batch. input_nH: the previous virtual stage's output (n,H),
  // or null on the first virtual stage, which embeds batch.tokens. With `scales` it also prepares
  // backward; on the last virtual stage it computes the loss and its gradient d_final_h (the LM
  // head's gradient is computed here, chunked, so no (N,V) logits buffer is kept). Stats cover
  // the chunk: the LM loss on the last virtual stage, the MoE terms of the chunk's layers.
  MicroBatchStats forward_chunk(int chunk, const TokenBatch& batch, const Tensor* input_nH,
                                const LossScales* scales, ModelStash& stash);
  // The chunk's output (n,H) after forward_chunk (the next virtual stage's input).
  const Tensor& chunk_output(const ModelStash& stash) const { return stash.residual.back(); }
  // Backward of `chunk`: d_output_nH is d loss / d the chunk's output, null on the last virtual
  // stage (the loss's gradient from forward). Accumulates every parameter gradient of the chunk
  // and returns d loss / d its input (n,H, inside the stash), null on the first virtual stage.
  // With defer_weight_gradients (zero-bubble schedules) it computes the input gradient only (and
  // the cheap norm-weight gradients); weight_gradients_chunk then accumulates the rest and runs
  // the grad-ready hooks. The stash must stay alive until then.
  const Tensor* backward_chunk(int chunk, ModelStash& stash, const Tensor* d_output_nH,
                               bool defer_weight_gradients = false);
  void weight_gradients_chunk(int chunk, ModelStash& stash);

  // The one-chunk case (no pipeline parallelism): the whole model.
  MicroBatchStats forward(const TokenBatch& batch, const LossScales& scales, ModelStash& stash);
  void backward(ModelStash& stash);                   // accumulates into every Parameter::grad
  MicroBatchStats evaluate(const TokenBatch& batch);  // forward only, no gradients

  const StagePartition& partition() const { return partition_; }
  int stage() const { return ctx_.coords.pp_rank; }
  int chunks() const { return partition_.chunks(); }
  bool is_first_virtual_stage(int chunk) const { return partition_.owns_embedding(stage(), chunk); }
  bool is_last_virtual_stage(int chunk) const { return partition_.owns_output(stage(), chunk); }
  // The word embedding when pipeline stages share it (tied embeddings, PP > 1): the first
  // stage's table and the last stage's copy for the output projection, on those two stages;
  // null elsewhere. Its gradient is summed over ParallelContext::embedding once backward is done.
  Parameter* shared_embedding() const { return shared_embedding_; }
  // The last stage's copy of the shared embedding: counted in no gradient norm (the first
  // stage's table counts once) and written once in checkpoints (same name and slice).
  bool is_embedding_copy(const Parameter* p) const {
    return p != nullptr && p == shared_embedding_ && stage() != 0;
  }
  void zero_grad();
  const ModelConfig& config() const { return config_; }
  // For FLOP counting: params a token touches (top-k experts), of this pipeline stage's modules
  // (summed over the stages that is the model's).
  int64_t active_parameter_count() const;

  // Additions.
  // Whether this model can run `config` under `ctx`; the error is one line naming the setting.
  // The constructor requires it to hold.
  static absl::Status validate(const ModelConfig& config, const ParallelContext& ctx);
  std::vector<Buffer*> buffers();  // saved, not trained (expert biases)
  const ParameterRegistry& registry() const { return registry_; }
  const std::vector<std::unique_ptr<TransformerLayer>>& layers() const { return layers_; }
  // FSSDP (parallel.moe_fssdp): the MoE layers' shared workspace and its counters; else null.
  const ExpertWorkspace* expert_workspace() const { return expert_workspace_.get(); }
  // Every element of every parameter on this pipeline stage (the embedding copy not counted).
  int64_t parameter_count() const;

  // Data-parallel hooks, each called with the parameters of one module: the embedding, one
  // transformer layer, or the final norm with the (untied) LM head. The grad-ready hook runs in
  // backward right after the module's gradients are final for this micro-batch (the LM head's,
  // computed in forward, with the final norm's; a tied embedding's with the embedding's, last);
  // the pre-use hook runs in forward just before the module first reads its parameters.
  using ParameterHook = std::function<void(std::span<Parameter* const>)>;
  void set_grad_ready_hook(ParameterHook hook) { grad_ready_hook_ = std::move(hook); }
  void set_forward_pre_hook(ParameterHook hook) { forward_pre_hook_ = std::move(hook); }

 private:
  ModelConfig config_;
  ParallelContext ctx_;
  StagePartition partition_;
  ParameterRegistry registry_;
  std::unique_ptr<Embedding> embedding_;  // first virtual stage, and the last with tied embeddings
  std::shared_ptr<ExpertWorkspace> expert_workspace_;  // FSSDP only
  std::vector<std::unique_ptr<TransformerLayer>> layers_;  // this stage's, in global order
  std::vector<int> layer_slot_;  // (L) index into layers_ of each global layer, -1 elsewhere
  Parameter* final_norm_ = nullptr;  // last virtual stage
  std::unique_ptr<LmHead> lm_head_;  // last virtual stage
  Parameter* shared_embedding_ = nullptr;
  std::unique_ptr<ModelStash> eval_stash_;  // reused by evaluate()
  bool recompute_ = false;
  DType compute_dtype_ = DType::kFloat32;
  TransformerLayerStash recompute_stash_;  // the one layer stash used under recomputation
  Tensor recompute_output_;                // (n,H) the recomputed layer's output (discarded)
  TransformerLayerStash& layer_stash(ModelStash& stash, int i);
  // Parameters per module for the hooks: [0] embedding, [1 + l] layer l, [L + 1] final norm and
  // LM head; empty for modules of other stages.
  std::vector<std::vector<Parameter*>> module_parameters_;
  ParameterHook grad_ready_hook_, forward_pre_hook_;
  void notify(const ParameterHook& hook, size_t module) const;
  void embedding_backward_dw(ModelStash& stash);  // the first virtual stage's, then its hook
};

}  // namespace moefold
