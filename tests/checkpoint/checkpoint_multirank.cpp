// Multi-rank checkpoints over MPI-IO: a replicated model saved collectively (one writer per
// tensor) loads back bit-exactly on every rank and in one process; hand-made sharded layouts
// written under one split read back under another (the reshard mechanism).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/tensor_manifest.h"
#include "model/model.h"
#include "tensor/check.h"
#include "trainer/config_parse.h"

namespace moefold {
namespace {
namespace fs = std::filesystem;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// A fresh directory, the same on every rank (rank 0's pid names it).
std::string shared_temp_dir(const std::string& tag) {
  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string dir =
      (fs::path(::testing::TempDir()) / ("moefold_ckpt_mpi_" + std::to_string(pid) + "_" + tag))
          .string();
  if (world_rank() == 0) fs::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

void remove_shared_dir(const std::string& dir) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) fs::remove_all(dir);
}

ParallelContext world_context() {
  auto ctx = ParallelContext::create(ParallelConfig{}, MPI_COMM_WORLD);  // DP = world size
  MOEFOLD_CHECK(ctx.ok(), ctx.status());
  return *ctx;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 16;
  c.num_attention_heads = 4;
  c.ffn_hidden_size = 24;
  c.vocab_size = 64;
  c.make_vocab_size_divisible_by = 16;
  c.seq_length = 6;
  c.moe.num_experts = 4;
  c.moe.moe_ffn_hidden_size = 8;
  c.moe.moe_layer_pattern = {0, 1};
  return c;
}

std::unique_ptr<AdamW> adam_for(const std::vector<Parameter*>& params) {
  std::vector<OptimTensor> tensors;
  for (Parameter* p : params) tensors.push_back({p->name(), p->value, p->grad, p->weight_decay});
  return std::make_unique<AdamW>(OptimizerConfig{}, tensors);
}

std::vector<Parameter*> params_of(const ParameterRegistry& registry) {
  std::vector<Parameter*> out;
  for (const auto& p : registry.parameters()) out.push_back(p.get());
  return out;
}

TEST(CheckpointMultirank, ReplicatedModelRoundTrip) {
  const ParallelContext ctx = world_context();
  const ModelConfig config = tiny_config();
  const std::string dir = shared_temp_dir("replicated");
  Recipe recipe;
  recipe.model = config;

  Model original(config, ctx);
  original.init_parameters(11);
  auto adam = adam_for(original.parameters());
  for (Parameter* p : original.parameters()) p->grad.fill(0.03f);
  adam->step(1e-2);
  auto saved =
      save_checkpoint(dir, {4, 32, "recipe"}, original.registry(), adam.get(), ctx, recipe.model);
  ASSERT_TRUE(saved.ok()) << saved.status();

  const auto check_equal = [&](const Model& restored, const AdamW& restored_adam) {
    for (size_t i = 0; i < original.registry().parameters().size(); ++i) {
      const auto& want = original.registry().parameters()[i];
      const auto& got = restored.registry().parameters()[i];
      ASSERT_EQ(want->value.to_vector(), got->value.to_vector()) << want->name();
      ASSERT_EQ(adam->exp_avg(i).to_vector(), restored_adam.exp_avg(i).to_vector()) << want->name();
      ASSERT_EQ(adam->exp_avg_sq(i).to_vector(), restored_adam.exp_avg_sq(i).to_vector());
    }
    EXPECT_EQ(restored_adam.steps(), 1);
  };
  {  // Same layout, collectively.
    Model restored(config, ctx);
    restored.init_parameters(12);
    auto restored_adam = adam_for(restored.parameters());
    auto state = load_checkpoint(dir, restored.registry(), restored_adam.get(), ctx, config);
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->iteration, 4);
    EXPECT_EQ(state->consumed_samples, 32);
    check_equal(restored, *restored_adam);
  }
  {  // Another layout: one process alone (serial HDF5), as a 1-rank resume would.
    const ParallelContext single = ParallelContext::single_process();
    Model restored(config, single);
    restored.init_parameters(13);
    auto restored_adam = adam_for(restored.parameters());
    auto state = load_checkpoint(dir, restored.registry(), restored_adam.get(), single, config);
    ASSERT_TRUE(state.ok()) << state.status();
    check_equal(restored, *restored_adam);
  }
  {  // A validation error reaches every rank as the same status.
    ModelConfig other = config;
    other.hidden_size = 32;
    Model restored(config, ctx);
    auto state = load_checkpoint(dir, restored.registry(), nullptr, ctx, other);
    ASSERT_FALSE(state.ok());
    EXPECT_NE(state.status().message().find("model.hidden_size is 16"), std::string::npos);
  }
  remove_shared_dir(dir);
}

// The value of element `flat` (row-major global index) of tensor number `id`.
float global_value(int id, int64_t flat) { return static_cast<float>(id * 1000 + flat) + 0.25f; }

// Row-major global index of each local element of `layout`.
std::vector<int64_t> global_indices(const TensorLayout& layout) {
  const size_t ndim = layout.global_shape.size();
  std::vector<int64_t> out;
  std::vector<int64_t> local(ndim, 0);
  for (int64_t i = 0; i < layout.local_numel(); ++i) {
    int64_t flat = 0;
    for (size_t a = 0; a < ndim; ++a)
      flat = flat * layout.global_shape[a] + layout.local_offset[a] + local[a];
    out.push_back(flat);
    for (int a = static_cast<int>(ndim) - 1; a >= 0; --a) {
      if (++local[a] < layout.local_shape[a]) break;
      local[a] = 0;
    }
  }
  return out;
}

// Split plans: tensor name, global shape and how this rank's slice is cut.
struct Plan {
  std::string name;
  std::vector<int64_t> shape;
  int axis;   // -1 = replicated
  int parts;  // rank r holds part r % parts (ranks beyond `parts` hold replicas)
  bool buffer = false;
};

// Sets every element of every tensor to global_value(plan index, global index).
void fill_values(const ParameterRegistry& registry, const std::vector<Plan>& plans) {
  for (size_t id = 0; id < plans.size(); ++id) {
    const TensorLayout* layout = nullptr;
    Tensor value;
    for (const auto& p : registry.parameters()) {
      if (p->name() == plans[id].name) layout = &p->layout, value = p->value;
    }
    for (const auto& b : registry.buffers()) {
      if (b->name() == plans[id].name) layout = &b->layout, value = b->value;
    }
    const std::vector<int64_t> flat = global_indices(*layout);
    for (size_t i = 0; i < flat.size(); ++i) {
      value.data()[i] = global_value(static_cast<int>(id), flat[i]);
    }
  }
}

std::unique_ptr<ParameterRegistry> build_registry(const std::vector<Plan>& plans, int rank) {
  auto registry = std::make_unique<ParameterRegistry>();
  for (const Plan& plan : plans) {
    TensorLayout layout = TensorLayout::replicated(plan.name, plan.shape);
    if (plan.axis >= 0) {
      layout = layout.split(plan.axis, ShardGroup::kTensor, plan.parts, rank % plan.parts);
    }
    if (plan.buffer) {
      registry->add_buffer(layout, InitKind::kZeros);
    } else {
      registry->add_weight(layout, 0.02f);
    }
  }
  fill_values(*registry, plans);
  return registry;
}

TEST(CheckpointMultirank, ShardedWriteReadsBackUnderAnotherSplit) {
  const ParallelContext ctx = world_context();
  const int rank = world_rank(), size = world_size();
  const std::string dir = shared_temp_dir("sharded");
  Recipe recipe;  // any model config: the hand-made tensors are not a model

  // Written: rows, columns, half-splits replicated over the other half, replicated.
  const std::vector<Plan> written = {
      {"a", {8, 12}, 0, size}, {"b", {6, 8}, 1, size},       {"experts/c", {4, 4, 6}, 0, 2},
      {"r", {5}, -1, 1},       {"bias", {8}, 0, size, true},
  };
  // Read back: each tensor cut differently.
  const std::vector<Plan> read = {
      {"a", {8, 12}, 1, size}, {"b", {6, 8}, 0, 2},        {"experts/c", {4, 4, 6}, 1, size},
      {"r", {5}, -1, 1},       {"bias", {8}, -1, 1, true},
  };
  auto source = build_registry(written, rank);
  auto source_adam = adam_for(params_of(*source));
  for (const auto& p : source->parameters()) {
    const std::vector<int64_t> flat = global_indices(p->layout);
    for (size_t i = 0; i < flat.size(); ++i)
      p->grad.data()[i] = 0.001f * static_cast<float>(flat[i] % 17);
  }
  source_adam->step(1e-2);        // moments are elementwise in the (global) index
  fill_values(*source, written);  // undo the step's update so values follow global_value
  auto saved = save_checkpoint(dir, {1, 8, ""}, *source, source_adam.get(), ctx, recipe.model);
  ASSERT_TRUE(saved.ok()) << saved.status();

  // The whole tensors, read by one process: the reference for every slice.
  const ParallelContext single = ParallelContext::single_process();
  std::vector<Plan> whole = written;
  for (Plan& plan : whole) plan.axis = -1;
  auto full = build_registry(whole, 0);
  for (const auto& p : full->parameters()) p->value.zero();
  auto full_adam = adam_for(params_of(*full));
  ASSERT_TRUE(load_checkpoint(dir, *full, full_adam.get(), single, recipe.model).ok());

  auto target = build_registry(read, rank);
  for (const auto& p : target->parameters()) p->value.fill(-1.0f);
  auto target_adam = adam_for(params_of(*target));
  auto state = load_checkpoint(dir, *target, target_adam.get(), ctx, recipe.model);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(target_adam->steps(), 1);

  for (size_t id = 0; id < read.size(); ++id) {
    const bool buffer = read[id].buffer;
    const TensorLayout& layout =
        buffer ? target->buffers()[0]->layout : target->parameters()[id]->layout;
    const Tensor& value = buffer ? target->buffers()[0]->value : target->parameters()[id]->value;
    const std::vector<int64_t> flat = global_indices(layout);
    for (size_t i = 0; i < flat.size(); ++i) {
      ASSERT_EQ(value.data()[i], global_value(static_cast<int>(id), flat[i]))
          << layout.name << " element " << flat[i] << " on rank " << rank;
    }
    if (buffer) continue;
    // Moments: this rank's slice of the single-process copy; the source's own slice matches too.
    for (size_t i = 0; i < flat.size(); ++i) {
      ASSERT_EQ(target_adam->exp_avg(id).data()[i], full_adam->exp_avg(id).data()[flat[i]]);
      ASSERT_EQ(target_adam->exp_avg_sq(id).data()[i], full_adam->exp_avg_sq(id).data()[flat[i]]);
    }
    const std::vector<int64_t> source_flat = global_indices(source->parameters()[id]->layout);
    for (size_t i = 0; i < source_flat.size(); ++i) {
      ASSERT_EQ(source_adam->exp_avg(id).data()[i], full_adam->exp_avg(id).data()[source_flat[i]]);
    }
  }
  remove_shared_dir(dir);
}

TEST(CheckpointMultirank, SaveDirectoryIsCommittedOnce) {
  const ParallelContext ctx = world_context();
  const std::string dir = shared_temp_dir("commit");
  Recipe recipe;
  recipe.model = tiny_config();
  recipe.checkpoint.keep_last = 1;
  Model model(recipe.model, ctx);
  model.init_parameters(3);
  for (int64_t it : {2, 4}) {
    auto saved = save_checkpoint(dir, {it, 0, ""}, model.registry(), nullptr, ctx, recipe.model,
                                 {recipe.checkpoint.keep_last});
    ASSERT_TRUE(saved.ok()) << saved.status();
  }
  EXPECT_EQ(list_checkpoints(dir), std::vector<int64_t>{4});
  EXPECT_EQ(*read_latest(dir), 4);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "iter_0000004" / kOptimFile));
  remove_shared_dir(dir);
}

TEST(CheckpointMultirank, ReplicasShareTheWriting) {
  const ParallelContext ctx = world_context();
  const int size = world_size();
  ParameterRegistry registry;
  for (int i = 0; i < 2 * size; ++i) {
    registry.add_weight(TensorLayout::replicated("w" + std::to_string(10 + i), {4, 3}), 0.02f);
  }
  registry.add_weight(TensorLayout::replicated("half", {2 * size, 3})
                          .split(0, ShardGroup::kTensor, 2, world_rank() % 2),
                      0.02f);
  std::vector<const TensorLayout*> layouts;
  for (const auto& p : registry.parameters()) layouts.push_back(&p->layout);
  const TensorManifest manifest = gather_manifest(layouts, *ctx.world);
  check_manifest_tiles(manifest);
  std::vector<int> tensors_written(size, 0);
  for (const ManifestEntry& entry : manifest.entries) {
    for (const ManifestSlice& slice : entry.slices) ++tensors_written[slice.writer];
  }
  // 2·size equal replicated tensors: two each; the half-split one adds one slice to two ranks.
  int total = 0;
  for (int r = 0; r < size; ++r) {
    EXPECT_GE(tensors_written[r], 2) << "rank " << r;
    EXPECT_LE(tensors_written[r], 3) << "rank " << r;
    total += tensors_written[r];
  }
  EXPECT_EQ(total, 2 * size + 2);
  const ManifestEntry& half = manifest.entries[0];
  ASSERT_EQ(half.name, "half");
  ASSERT_EQ(half.slices.size(), 2u);
  EXPECT_EQ(half.slices[0].holders.size(), static_cast<size_t>(size / 2));
}

// Save and load bandwidth of the demo model (configs/demo.yaml, GPT-2 vocabulary) with its Adam
// state. Not run by ctest; run by hand:
//   mpirun -np N build/tests/checkpoint/checkpoint_mpi_tests --gtest_also_run_disabled_tests
//     --gtest_filter='*DemoBandwidth*'
TEST(CheckpointMultirank, DISABLED_DemoBandwidth) {
  auto recipe = load_recipe(std::string(MOEFOLD_SOURCE_DIR) + "/configs/demo.yaml");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  if (recipe->model.vocab_size == 0) recipe->model.vocab_size = 50257;
  const ParallelContext ctx = world_context();
  const std::string dir = shared_temp_dir("bandwidth");
  Model model(recipe->model, ctx);
  model.init_parameters(1);
  auto adam = adam_for(model.parameters());
  for (int round = 0; round < 2; ++round) {
    auto saved = save_checkpoint(dir, {round, 0, ""}, model.registry(), adam.get(), ctx, recipe->model);
    ASSERT_TRUE(saved.ok()) << saved.status();
    CheckpointIoStats loaded;
    ASSERT_TRUE(
        load_checkpoint(dir, model.registry(), adam.get(), ctx, recipe->model, &loaded).ok());
    if (world_rank() == 0) {
      std::printf("ranks %d: %s\nranks %d: %s\n", world_size(),
                  describe_checkpoint_io("saved", *saved).c_str(), world_size(),
                  describe_checkpoint_io("loaded", loaded).c_str());
    }
  }
  remove_shared_dir(dir);
}

}  // namespace
}  // namespace moefold
