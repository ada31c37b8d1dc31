// The parameter registry: every trainable tensor (and every saved buffer) of the model with its
// MODEL.md checkpoint name, its GLOBAL shape and the slice of it this rank holds.
//
// Sharding is declarative: a tensor's layout says along which axis (if any) it is split, over
// which parallel group, into how many parts and which part is ours. Everything is replicated on
// one process; the TP/EP layer plans fill `split` later without touching the layers' math.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace moefold {

// The parallel group a tensor axis is split over.
enum class ShardGroup {
  kTensor,        // TP: attention / dense MLP weights, vocabulary rows
  kExpert,        // EP: the expert axis of [E, ...] expert weights
  kExpertTensor,  // ETP: the F axis of expert weights
  kExpertData,    // expert-DP: the F axis again, under FSSDP (parallel/sparse_shards.h)
};

// One split axis: the global extent is cut into `parts` equal contiguous pieces; we hold `index`.
struct AxisSplit {
  int axis = 0;
  ShardGroup group = ShardGroup::kTensor;
  int parts = 1;
  int index = 0;
};

// Where this rank's local tensor sits inside the global one.
struct TensorLayout {
  std::string name;                   // MODEL.md checkpoint name, e.g. "layers/1/moe/router"
  std::vector<int64_t> global_shape;  // unsharded shape
  std::vector<int64_t> local_shape;   // this rank's shape
  std::vector<int64_t> local_offset;  // first global index of our slice, per axis
  std::vector<AxisSplit> splits;      // empty = replicated

  // A replicated layout (local == global).
  static TensorLayout replicated(std::string name, std::vector<int64_t> global_shape);
  // Apply one more split (checked: the axis must divide evenly).
  TensorLayout split(int axis, ShardGroup group, int parts, int index) const;
  int64_t global_numel() const;
  int64_t local_numel() const;
};

// How a tensor is initialised (MODEL.md "Initialisation").
enum class InitKind { kNormal, kOnes, kZeros };

struct Parameter {
  TensorLayout layout;
  Tensor value;  // local_shape, float32
  Tensor grad;   // local_shape, float32; accumulated by backward, zeroed by Model::zero_grad
  bool weight_decay = true;  // 2-D/3-D weights yes, norm weights no
  bool is_expert = false;    // routed-expert weight (reduced over EDP instead of DP later)
  InitKind init = InitKind::kNormal;
  float init_std = 0.0f;  // σ for kNormal
  // MODEL.md "Mixed precision": the bf16 copy of `value` the GEMMs read, undefined in float32
  // runs and for parameters computed in float32 (the router).
  Tensor compute;
  bool float32_compute = false;
  mutable bool compute_stale = true;

  const std::string& name() const { return layout.name; }
  // The weights forward and backward read: the compute copy, rounded from `value` on its first
  // use after ParameterRegistry::mark_values_changed; `value` itself without one.
  const Tensor& compute_value() const;
};

// Not trained by the optimizer, but saved in checkpoints (e.g. the expert bias).
struct Buffer {
  TensorLayout layout;
  Tensor value;  // local_shape, float32
  InitKind init = InitKind::kZeros;

  const std::string& name() const { return layout.name; }
};

// Owns the parameters and buffers, in registration order (which is the fixed order of
// Model::parameters()). Pointers stay valid for the registry's lifetime.
class ParameterRegistry {
 public:
  // A normal-initialised weight (weight decay on).
  Parameter* add_weight(TensorLayout layout, float init_std, bool is_expert = false);
  // A norm weight: ones, no weight decay.
  Parameter* add_norm(TensorLayout layout);
  Buffer* add_buffer(TensorLayout layout, InitKind init);

  const std::vector<std::unique_ptr<Parameter>>& parameters() const { return parameters_; }
  const std::vector<std::unique_ptr<Buffer>>& buffers() const { return buffers_; }
  Parameter* find(const std::string& name) const;  // nullptr when absent

  // MODEL.md init of every parameter and buffer; values depend only on (seed, name, global index).
  void init(uint64_t seed);
  void zero_grad();
  // Gives every parameter (but float32_compute ones) a compute copy of `dtype`; kFloat32 drops
  // them. Then, and after every change of the values (an optimizer step, a load), call
  // mark_values_changed so that the copies are rounded again on first use.
  void set_compute_dtype(DType dtype);
  void mark_values_changed();

 private:
  Parameter* add(TensorLayout layout);
  std::vector<std::unique_ptr<Parameter>> parameters_;
  std::vector<std::unique_ptr<Buffer>> buffers_;
};

}  // namespace moefold
