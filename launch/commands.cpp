#include "launch/commands.h"

#include <mpi.h>

#include <cstdio>
#include <iostream>

#include "data/preprocess.h"
#include "launch/command_args.h"
#include "parallel/context.h"
#include "parallel/layout.h"
#include "parallel/layout_report.h"
#include "parallel/mpi_runtime.h"
#include "trainer/config_parse.h"
#include "trainer/config_validate.h"
#include "trainer/trainer.h"

namespace moefold {
namespace {

int report(const char* command, const absl::Status& status) {
  std::fprintf(stderr, "moefold %s: error: %s\n", command, std::string(status.message()).c_str());
  return 1;
}

// The recipe on every rank: each parses the same file, so each fails the same way and no rank
// waits on another; only rank 0 prints.
absl::StatusOr<Recipe> load_and_validate(const CommandArgs& args, int world_size) {
  auto recipe = load_recipe(args.config, args.overrides);
  if (!recipe.ok()) return recipe.status();
  if (absl::Status s = validate_recipe_for_world(*recipe, world_size); !s.ok()) return s;
  return recipe;
}

absl::Status checkpoint_loading_unsupported(const std::string& load) {
  return absl::UnimplementedError(
      "--load " + load + ": not supported yet: loading checkpoints (the checkpoint format is "
      "being built); evaluation runs inside training with training.eval_interval");
}

}  // namespace

int run_layout_command(int argc, char** argv) {
  auto args = parse_command_args("layout", argc, argv, {"--config", "--set", "--world-size", "--json"});
  if (!args.ok()) return report("layout", args.status());
  if (args->world_size == 0) {
    return report("layout", absl::InvalidArgumentError("--world-size N is required"));
  }
  auto recipe = load_and_validate(*args, args->world_size);
  if (!recipe.ok()) return report("layout", recipe.status());
  auto layout = build_rank_layout(recipe->parallel, args->world_size);
  if (!layout.ok()) return report("layout", layout.status());
  std::cout << (args->json ? format_layout_json(*layout) : format_layout_table(*layout));
  return 0;
}

int run_train_command(int argc, char** argv) {
  auto runtime = MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) return report("train", runtime.status());
  const int rank = (*runtime)->world_rank();
  const auto fail = [&](const absl::Status& status) { return rank == 0 ? report("train", status) : 1; };

  auto args = parse_command_args("train", argc, argv, {"--config", "--set", "--load"});
  if (!args.ok()) return fail(args.status());
  if (!args->load.empty()) return fail(checkpoint_loading_unsupported(args->load));
  auto recipe = load_and_validate(*args, (*runtime)->world_size());
  if (!recipe.ok()) return fail(recipe.status());
  auto ctx = ParallelContext::create(recipe->parallel, MPI_COMM_WORLD);
  if (!ctx.ok()) return fail(ctx.status());

  // From here on an error may be one rank's alone (its data, its memory): it is printed by
  // that rank and ends the whole job, so that no other rank waits forever in a collective.
  const auto abort_job = [&](const absl::Status& status) {
    std::fprintf(stderr, "moefold train: error on rank %d: %s\n", rank,
                 std::string(status.message()).c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  };
  auto trainer = Trainer::create(*recipe, *ctx);
  if (!trainer.ok()) return abort_job(trainer.status());
  if (absl::Status s = (*trainer)->train(); !s.ok()) return abort_job(s);
  if (rank == 0) {
    const LoggingConfig& log = (*trainer)->recipe().logging;
    std::printf("moefold train: done; metrics in %s (plots: scripts/plot_metrics %s)\n",
                (log.metrics_path.empty() ? log.run_dir + "/metrics.jsonl" : log.metrics_path).c_str(),
                (log.metrics_path.empty() ? log.run_dir + "/metrics.jsonl" : log.metrics_path).c_str());
  }
  return 0;
}

int run_eval_command(int argc, char** argv) {
  auto args = parse_command_args("eval", argc, argv, {"--config", "--set", "--load"});
  if (!args.ok()) return report("eval", args.status());
  if (args->load.empty()) {
    return report("eval", absl::InvalidArgumentError("--load CHECKPOINT_DIR is required"));
  }
  return report("eval", checkpoint_loading_unsupported(args->load));
}

int run_preprocess_command(int argc, char** argv) {
  auto options = parse_preprocess_args(argc, argv);
  if (!options.ok()) return report("preprocess", options.status());
  if (absl::Status s = run_preprocess(*options); !s.ok()) return report("preprocess", s);
  return 0;
}

}  // namespace moefold
