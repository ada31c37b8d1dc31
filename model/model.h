// The whole MoE transformer of MODEL.md on this rank: embedding, layers, final norm, LM head and
// loss, with the parameter registry. Forward/backward of one micro-batch at a time; activations
// live in a caller-owned ModelStash so several micro-batches can be in flight.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "data/micro_batch.h"
#include "model/embedding.h"
#include "model/lm_head.h"
#include "model/model_config.h"
#include "model/parameter.h"
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
  double lm_loss_sum = 0;    // Σ CE·loss_mask (unnormalised)
  double loss_mask_sum = 0;  // Σ loss_mask
  double aux_loss = 0;  // balance losses of this micro-batch (coeff applied, summed over layers)
  double z_loss = 0;    // z losses (coeff applied, summed over layers)
  std::vector<MoeLayerStats> moe;  // one per MoE layer, counts before capacity dropping
};

// Per-micro-batch activations and gradient buffers. Reusing one stash for later micro-batches
// of the same shape reuses its buffers.
class ModelStash {
 public:
  explicit ModelStash(int num_layers) : layers(num_layers) {}

  int64_t batch = 0, seq = 0;
  bool has_gradients = false;      // forward prepared backward (lm gradient computed)
  std::vector<int32_t> tokens;     // (N)
  std::vector<int32_t> positions;  // (N) position of each token in its sequence
  std::vector<TransformerLayerStash> layers;
  // The residual stream holds n = N/TP token rows under sequence parallelism, n = N otherwise.
  std::vector<Tensor> residual;  // L+1 tensors (n,H): residual[l] is layer l's input
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
  std::vector<Parameter*> parameters();        // every trainable parameter, fixed order
  std::vector<Tensor*> expert_bias_buffers();  // per MoE layer [E] (empty when disabled)
  std::unique_ptr<ModelStash> make_stash() const;
  // Forward of one micro-batch; with `scales` it also prepares backward (the LM head's gradient
  // is computed here, chunked, so no (N,V) logits buffer is kept).
  MicroBatchStats forward(const MicroBatch& batch, const LossScales& scales, ModelStash& stash);
  void backward(ModelStash& stash);                   // accumulates into every Parameter::grad
  MicroBatchStats evaluate(const MicroBatch& batch);  // forward only, no gradients
  void zero_grad();
  const ModelConfig& config() const { return config_; }
  // For FLOP counting: params a token touches (top-k experts).
  int64_t active_parameter_count() const;

  // Additions.
  // Whether this model can run `config` under `ctx`; the error is one line naming the setting.
  // The constructor requires it to hold.
  static absl::Status validate(const ModelConfig& config, const ParallelContext& ctx);
  std::vector<Buffer*> buffers();  // saved, not trained (expert biases)
  const ParameterRegistry& registry() const { return registry_; }
  const std::vector<std::unique_ptr<TransformerLayer>>& layers() const { return layers_; }
  int64_t parameter_count() const;  // every element of every parameter

  // Data-parallel hooks, each called with the parameters of one module: the embedding, one
  // transformer layer, or the final norm with the (untied) LM head. The grad-ready hook runs in
  // backward right after the module's gradients are final for this micro-batch (the LM head's,
  // computed in forward, with the final norm's; a tied embedding's with the embedding's, last);
  // the pre-use hook runs in forward just before the module first reads its parameters.
  using ParameterHook = std::function<void(std::span<Parameter* const>)>;
  void set_grad_ready_hook(ParameterHook hook) { grad_ready_hook_ = std::move(hook); }
  void set_forward_pre_hook(ParameterHook hook) { forward_pre_hook_ = std::move(hook); }

 private:
  MicroBatchStats run_forward(const MicroBatch& batch, const LossScales* scales, ModelStash& stash);

  ModelConfig config_;
  ParallelContext ctx_;
  ParameterRegistry registry_;
  std::unique_ptr<Embedding> embedding_;
  std::vector<std::unique_ptr<TransformerLayer>> layers_;
  Parameter* final_norm_;
  std::unique_ptr<LmHead> lm_head_;
  std::unique_ptr<ModelStash> eval_stash_;  // reused by evaluate()
  // Parameters per module for the hooks: [0] embedding, [1 + l] layer l, [L + 1] final norm and
  // LM head.
  std::vector<std::vector<Parameter*>> module_parameters_;
  ParameterHook grad_ready_hook_, forward_pre_hook_;
  void notify(const ParameterHook& hook, size_t module) const;
};

}  // namespace moefold
