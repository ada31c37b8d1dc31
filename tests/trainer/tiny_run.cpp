#include "tiny_run.h"

#include <gtest/gtest.h>

#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "data/indexed_dataset.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold::testing {

std::string write_tiny_dataset(const std::string& dir, int documents, unsigned seed) {
  std::filesystem::create_directories(dir);
  const std::string prefix = dir + "/tiny_text_document";
  auto builder = IndexedDatasetBuilder::create(prefix, IndexedDType::kUInt16);
  EXPECT_TRUE(builder.ok()) << builder.status();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(5, 60), token(0, 255);
  for (int d = 0; d < documents; ++d) {
    std::vector<int32_t> ids(length(rng));
    for (int32_t& id : ids) id = token(rng);
    ids.push_back(256);  // end of document
    EXPECT_TRUE(builder->add_item(ids).ok());
    builder->end_document();
  }
  EXPECT_TRUE(builder->finalize().ok());
  return prefix;
}

Recipe tiny_recipe(const std::string& data_prefix, const std::string& run_dir,
                   const std::vector<std::string>& overrides) {
  const std::string yaml = R"(
model:
  num_layers: 2
  hidden_size: 32
  num_attention_heads: 4
  num_query_groups: 2
  ffn_hidden_size: 64
  seq_length: 16
moe:
  num_experts: 4
  moe_ffn_hidden_size: 32
  moe_router_topk: 2
  moe_layer_freq: [0, 1]
  moe_aux_loss_coeff: 1.0e-2
  moe_z_loss_coeff: 1.0e-3
  moe_shared_expert_intermediate_size: 32
training:
  micro_batch_size: 2
  global_batch_size: 8
  train_iters: 5
  seed: 7
  peak_flops: 1.0e+11
optimizer:
  lr: 1.0e-2
  min_lr: 1.0e-3
  lr_warmup_iters: 1
  clip_grad: 1.0
data:
  tokenizer_type: byte
  split: "90,10,0"
  data_path: ")" + data_prefix + R"("
logging:
  run_dir: ")" + run_dir + R"("
)";
  auto recipe = parse_recipe_string(yaml, "tiny_recipe", overrides);
  EXPECT_TRUE(recipe.ok()) << recipe.status();
  return *recipe;
}

std::vector<StepRecord> run_steps(const Recipe& recipe, const ParallelContext& ctx, int steps) {
  auto trainer = Trainer::create(recipe, ctx);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  std::vector<StepRecord> records;
  if (!trainer.ok()) return records;
  for (int i = 0; i < steps; ++i) {
    auto m = (*trainer)->train_step(i);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) break;
    records.push_back({m->lm_loss, m->aux_loss, m->z_loss, m->grad_norm});
  }
  return records;
}

std::string fresh_temp_dir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("moefold-" + name + "-" + std::to_string(::getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  return dir;
}

int world_size() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  return world;
}

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

std::string shared_tiny_corpus(const std::string& name, unsigned seed) {
  int pid = static_cast<int>(::getpid());  // rank 0's: concurrent test runs never share a folder
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("moefold-" + name + "-np" + std::to_string(world_size()) + "-" +
                            std::to_string(pid)))
                              .string();
  // Ranks leave the previous test suite at different times (its last steps may need no
  // collective): none may still read the directory when rank 0 clears it.
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) {
    std::filesystem::remove_all(dir);
    write_tiny_dataset(dir, 300, seed);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

void expect_same_steps(const std::vector<StepRecord>& got, const std::vector<StepRecord>& want,
                       size_t first, const StepTolerance& tolerance) {
  ASSERT_GE(want.size(), first + got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(first + i + 1));
    const StepRecord& w = want[first + i];
    EXPECT_NEAR(got[i].lm_loss, w.lm_loss, tolerance.lm_loss * w.lm_loss);
    EXPECT_NEAR(got[i].aux_loss, w.aux_loss, tolerance.balance_losses * w.aux_loss);
    EXPECT_NEAR(got[i].z_loss, w.z_loss, tolerance.balance_losses * w.z_loss);
    EXPECT_NEAR(got[i].grad_norm, w.grad_norm, tolerance.grad_norm * w.grad_norm);
  }
}

void expect_matches_single_process(const std::string& dir, const std::string& name,
                                   const std::vector<std::string>& model,
                                   const std::vector<std::string>& parallel, int steps,
                                   const StepTolerance& tolerance) {
  const std::string run = dir + "/" + name;
  const std::vector<StepRecord> reference =
      run_steps(tiny_recipe(tiny_prefix(dir), run + "-single-" + std::to_string(world_rank()), model),
                ParallelContext::single_process(), steps);
  std::vector<std::string> overrides = model;
  overrides.insert(overrides.end(), parallel.begin(), parallel.end());
  const Recipe recipe = tiny_recipe(tiny_prefix(dir), run + "-parallel", overrides);
  auto ctx = ParallelContext::create(recipe.parallel, MPI_COMM_WORLD);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  const std::vector<StepRecord> got = run_steps(recipe, *ctx, steps);
  ASSERT_EQ(reference.size(), static_cast<size_t>(steps));
  ASSERT_EQ(got.size(), static_cast<size_t>(steps));
  expect_same_steps(got, reference, 0, tolerance);
  EXPECT_LT(got.back().lm_loss, got.front().lm_loss);  // and it learns
}

std::vector<InvarianceLayout> every_dimension_layouts(const std::vector<std::string>& model) {
  const auto layout = [](std::initializer_list<std::string> settings) {
    return std::vector<std::string>(settings);
  };
  return {
        InvarianceLayout{"dp2", 2, model, {}},
        InvarianceLayout{"dp2_distributed_optimizer", 2, model,
                         layout({"parallel.use_distributed_optimizer=true",
                                 "parallel.overlap_param_gather=true",
                                 "parallel.overlap_grad_reduce=true"})},
        InvarianceLayout{"tp2_sp", 2, model,
                         layout({"parallel.tensor_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=1",
                                 "parallel.sequence_parallel=true"})},
        InvarianceLayout{"ep2", 2, model,
                         layout({"parallel.expert_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=1"})},
        InvarianceLayout{"etp2", 2, model,
                         layout({"parallel.tensor_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=2"})},
        InvarianceLayout{"edp2_fssdp", 2, model, layout({"parallel.moe_fssdp=true"})},
        InvarianceLayout{"ep2_placement", 2, model,
                         layout({"parallel.expert_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=1",
                                 "parallel.fssdp_spare_slots=2"})},
        InvarianceLayout{"pp2", 2, model, layout({"parallel.pipeline_model_parallel_size=2"})},
        InvarianceLayout{"cp2", 2, model, layout({"parallel.context_parallel_size=2"})},
        InvarianceLayout{"tp2_ep2_sp", 4, model,
                         layout({"parallel.tensor_model_parallel_size=2",
                                 "parallel.expert_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=1",
                                 "parallel.sequence_parallel=true"})},
        InvarianceLayout{"ep4_placement_rematerialise", 4, model,
                         layout({"parallel.expert_model_parallel_size=4",
                                 "parallel.expert_tensor_parallel_size=1",
                                 "parallel.fssdp_spare_slots=2",
                                 "parallel.fssdp_rematerialise=true"})},
        InvarianceLayout{"ep2_fssdp_edp2", 4, model,
                         layout({"parallel.expert_model_parallel_size=2",
                                 "parallel.expert_tensor_parallel_size=1",
                                 "parallel.moe_fssdp=true"})},
        InvarianceLayout{"pp2_cp2", 4, model,
                         layout({"parallel.pipeline_model_parallel_size=2",
                                 "parallel.context_parallel_size=2"})}};
}

}  // namespace moefold::testing
