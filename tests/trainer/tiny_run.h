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

}  // namespace moefold::testing
