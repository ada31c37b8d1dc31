// Shared by the trainer tests: a tiny random-token corpus, a tiny MoE recipe over it, and a
// runner that records each step's losses and gradient norm.
#pragma once

#include <string>
#include <vector>

#include "parallel/context.h"
#include "trainer/train_config.h"

namespace moefold::testing {

// Writes DIR/tiny_text_document.{bin,idx}: `documents` documents of random byte-tokenizer ids
// with lengths 5..60, deterministic for `seed`. Returns the prefix.
std::string write_tiny_dataset(const std::string& dir, int documents, unsigned seed);

// A 2-layer model (one dense, one MoE layer: 4 experts top-2, shared expert, GQA), hidden 32,
// seq 16, global batch 8 of micro-batches of 2, byte tokenizer, aux and z losses on; `overrides`
// as given to --set (e.g. "parallel.use_distributed_optimizer=true").
Recipe tiny_recipe(const std::string& data_prefix, const std::string& run_dir,
                   const std::vector<std::string>& overrides = {});

struct StepRecord {
  double lm_loss = 0, aux_loss = 0, z_loss = 0, grad_norm = 0;
};

// Builds a Trainer for `recipe` on `ctx` and runs `steps` optimizer steps.
std::vector<StepRecord> run_steps(const Recipe& recipe, const ParallelContext& ctx, int steps);

// <tmp>/moefold-<name>-<pid>, emptied: ctest runs tests of one binary in parallel processes.
std::string fresh_temp_dir(const std::string& name);

int world_size();  // of MPI_COMM_WORLD
int world_rank();

// Rank 0 writes the tiny corpus into <tmp>/moefold-<name>-np<world>-<pid> while every rank of
// MPI_COMM_WORLD waits for it (collective). Returns that directory.
std::string shared_tiny_corpus(const std::string& name, unsigned seed);
inline std::string tiny_prefix(const std::string& dir) { return dir + "/tiny_text_document"; }

// Relative tolerances of a step's records.
struct StepTolerance {
  double lm_loss = 1e-5, balance_losses = 1e-5, grad_norm = 1e-4;  // balance: aux and z
};
// A bf16 layout against one bf16 process: activations round to bf16 at other points of the sum.
inline constexpr StepTolerance kBf16InvarianceTolerance{1e-2, 5e-2, 1e-1};

// Each step of `got` has the losses and gradient norm of the step of `want` it stands for;
// got[i] is want[first + i].
void expect_same_steps(const std::vector<StepRecord>& got, const std::vector<StepRecord>& want,
                       size_t first = 0, const StepTolerance& tolerance = {});

// One layout of an invariance test.
struct InvarianceLayout {
  std::string name;
  int world;                          // the rank count it runs on (skipped at the others)
  std::vector<std::string> model;     // overrides for the reference and the parallel run
  std::vector<std::string> parallel;  // overrides for the parallel run only
};

// One layout of every parallel dimension (DP with the distributed optimizer, TP+SP, EP, ETP,
// FSSDP, placement, PP, CP) and 4-rank compositions, each with the `model` overrides: the suites
// that rerun the whole invariance matrix under one setting (bf16, a device) share it.
std::vector<InvarianceLayout> every_dimension_layouts(const std::vector<std::string>& model);

// DESIGN.md's invariance: `steps` steps of the tiny recipe with the `model` overrides in one
// process, and with `model` + `parallel` over MPI_COMM_WORLD, give the same per-step losses and
// gradient norms, and the parallel run learns. `dir` holds the corpus and both runs' outputs.
void expect_matches_single_process(const std::string& dir, const std::string& name,
                                   const std::vector<std::string>& model,
                                   const std::vector<std::string>& parallel, int steps = 5,
                                   const StepTolerance& tolerance = {});

}  // namespace moefold::testing
