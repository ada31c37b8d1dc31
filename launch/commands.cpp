#include "launch/commands.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <iostream>
#include <string>

#include "data/preprocess.h"
#include "interop/load_hf.h"
#include "launch/command_args.h"
#include "launch/device_binding.h"
#include "launch/stop_signals.h"
#include "parallel/context.h"
#include "parallel/layout.h"
#include "parallel/layout_report.h"
#include "parallel/agreed_status.h"
#include "parallel/arrival_board.h"
#include "parallel/mpi_runtime.h"
#include "parallel/watchdog.h"
#include "tensor/cuda_entry.h"
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

// Prints a status as one line and ends the job. An error every rank holds alike (an agreed
// one: parallel/agreed_status.h) is printed once, by rank 0, and every rank exits normally; any
// other may be one rank's alone (its data, its memory), so the job ends with MPI_Abort and no
// rank is left waiting in a collective.
int abort_job(const char* command, int rank, const absl::Status& status) {
  if (is_agreed(status)) {  // every rank holds it: one line, and a normal exit everywhere
    watchdog::stop();
    if (rank == 0) report(command, status);
    return 1;
  }
  std::fprintf(stderr, "moefold %s: error on rank %d%s: %s\n", command, rank,
               watchdog::describe_position().c_str(), std::string(status.message()).c_str());
  std::fflush(stderr);
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, 1);  // alone, there is no one to release
  return 1;
}

// MPI, the recipe and the ParallelContext for train and eval; errors before the context exists
// are the same on every rank, so they end the job normally with one line from rank 0.
struct Job {
  std::unique_ptr<MpiRuntime> runtime;
  Recipe recipe;
  std::unique_ptr<ParallelContext> ctx;
  std::unique_ptr<ArrivalBoard> arrivals;  // what lets the watchdog name a hang's culprit
};

absl::StatusOr<Job> start_job(const CommandArgs& args, std::unique_ptr<MpiRuntime> runtime) {
  Job job;
  job.runtime = std::move(runtime);
  auto recipe = load_and_validate(args, job.runtime->world_size());
  if (!recipe.ok()) return recipe.status();
  job.recipe = std::move(*recipe);
  if (!args.load.empty()) job.recipe.checkpoint.load = args.load;
  // Before the communicators: NCCL ones need the rank's GPU.
  if (absl::Status s = bind_device(job.recipe.training, &job.recipe.parallel, MPI_COMM_WORLD);
      !s.ok()) {
    return s;
  }
  auto ctx = ParallelContext::create(job.recipe.parallel, MPI_COMM_WORLD);
  if (!ctx.ok()) return ctx.status();
  // From here every wait on another rank is timed: a stopped or dead rank ends the job.
  const double timeout_minutes = job.recipe.parallel.distributed_timeout_minutes;
  if (timeout_minutes > 0) {
    watchdog::start(timeout_minutes * 60, ctx->coords.world_rank,
                    [] { MPI_Abort(MPI_COMM_WORLD, 1); });
  }
  job.ctx = std::make_unique<ParallelContext>(std::move(*ctx));
  if (timeout_minutes > 0 && job.runtime->world_size() > 1) {
    auto arrivals = ArrivalBoard::create(MPI_COMM_WORLD);
    if (!arrivals.ok()) return arrivals.status();
    job.arrivals = *std::move(arrivals);
  }
  return job;
}

// --load-hf: the model's parameters from a Hugging Face folder, each rank its own slices.
absl::Status load_hf_into(Trainer& trainer, const std::string& dir, int rank) {
  LoadHfStats stats;
  if (absl::Status s = load_hf_checkpoint(dir, trainer.model().registry(), trainer.recipe().model,
                                          &stats);
      !s.ok()) {
    return s;
  }
  if (rank == 0) {
    std::printf("moefold: initialised from %s (%s): %.1f MB read by rank 0\n", dir.c_str(),
                stats.format.c_str(), static_cast<double>(stats.bytes_read) / 1e6);
  }
  return absl::OkStatus();
}

// --kernel-profile FILE: rank 0 records its GPU's kernels, copies and memsets over train() and
// writes them as tensor/kernel_profile.h's table.
constexpr int kProfileRows = 40;

absl::Status start_kernel_profile() {
#ifdef MOEFOLD_HAVE_CUDA
  return start_cuda_kernel_profile();
#else
  return absl::FailedPreconditionError("--kernel-profile: this moefold was built without CUDA");
#endif
}

absl::Status write_kernel_profile(const std::string& path) {
#ifdef MOEFOLD_HAVE_CUDA
  auto table = finish_cuda_kernel_profile(kProfileRows);
  if (!table.ok()) return table.status();
  std::FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) {
    return absl::FailedPreconditionError("--kernel-profile: cannot write " + path);
  }
  const bool written = std::fputs(table->c_str(), file) >= 0;
  if (std::fclose(file) != 0 || !written) {
    return absl::DataLossError("--kernel-profile: writing " + path + " failed");
  }
  std::printf("moefold train: kernel profile: %s\n", path.c_str());
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("--kernel-profile: this moefold was built without CUDA");
#endif
}

// The bf16 attention paths rank 0's GPU chose by timing both (tensor/attention_path_tuner.h).
void print_attention_paths() {
#ifdef MOEFOLD_HAVE_CUDA
  for (const std::string& line : cuda_attention_path_report()) {
    std::printf("moefold train: %s\n", line.c_str());
  }
#endif
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
  const std::atomic<int>& stop_signal = install_stop_signal_handlers();  // after MPI's own
  const int rank = (*runtime)->world_rank();
  const auto fail = [&](const absl::Status& s) { return rank == 0 ? report("train", s) : 1; };
  auto args =
      parse_command_args("train", argc, argv,
                         {"--config", "--set", "--load", "--load-hf", "--kernel-profile"});
  if (!args.ok()) return fail(args.status());
  auto job = start_job(*args, std::move(*runtime));
  if (!job.ok()) return fail(job.status());
  const std::string& load = job->recipe.checkpoint.load;
  if (!load.empty() && !args->load_hf.empty()) {
    return fail(absl::InvalidArgumentError(
        "--load-hf starts a new run from Hugging Face weights; it cannot be combined with "
        "--load or checkpoint.load (which resume one)"));
  }

  if (!args->kernel_profile.empty() && job->recipe.training.device != TrainingDevice::kCuda) {
    return fail(absl::InvalidArgumentError("--kernel-profile needs training.device: cuda"));
  }

  auto trainer = Trainer::create(job->recipe, *job->ctx);
  if (!trainer.ok()) return abort_job("train", rank, trainer.status());
  if (!args->load_hf.empty()) {
    if (absl::Status s = load_hf_into(**trainer, args->load_hf, rank); !s.ok()) {
      return abort_job("train", rank, s);
    }
  }
  (*trainer)->set_stop_signal(&stop_signal);
  if (!load.empty()) {
    if (absl::Status s = (*trainer)->load_checkpoint(load); !s.ok()) {
      return abort_job("train", rank, s);
    }
  }
  const bool profile = !args->kernel_profile.empty() && rank == 0;
  if (profile) {
    if (absl::Status s = start_kernel_profile(); !s.ok()) {
      return abort_job("train", rank, s);
    }
  }
  if (absl::Status s = (*trainer)->train(); !s.ok()) return abort_job("train", rank, s);
  if (rank == 0) print_attention_paths();
  if (profile) {
    if (absl::Status s = write_kernel_profile(args->kernel_profile); !s.ok()) {
      return abort_job("train", rank, s);
    }
  }
  watchdog::stop();
  if (rank == 0 && (*trainer)->stop_reason().empty()) {
    const Recipe& recipe = (*trainer)->recipe();
    const std::string metrics = recipe.logging.metrics_path.empty()
                                    ? recipe.logging.run_dir + "/metrics.jsonl"
                                    : recipe.logging.metrics_path;
    std::printf("moefold train: done. metrics: %s | plots: scripts/plot_metrics %s%s%s\n",
                metrics.c_str(), metrics.c_str(),
                recipe.checkpoint.save.empty() ? "" : " | checkpoints: ",
                recipe.checkpoint.save.c_str());
  }
  return 0;
}

int run_eval_command(int argc, char** argv) {
  auto runtime = MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) return report("eval", runtime.status());
  const int rank = (*runtime)->world_rank();
  const auto fail = [&](const absl::Status& s) { return rank == 0 ? report("eval", s) : 1; };
  auto args = parse_command_args("eval", argc, argv, {"--config", "--set", "--load"});
  if (!args.ok()) return fail(args.status());
  if (args->load.empty()) return fail(absl::InvalidArgumentError("--load CHECKPOINT is required"));
  auto job = start_job(*args, std::move(*runtime));
  if (!job.ok()) return fail(job.status());

  auto trainer = Trainer::create(job->recipe, *job->ctx);
  if (!trainer.ok()) return abort_job("eval", rank, trainer.status());
  if (absl::Status s = (*trainer)->load_checkpoint(args->load, /*model_only=*/true); !s.ok()) {
    return abort_job("eval", rank, s);
  }
  auto result = (*trainer)->evaluate(job->recipe.training.eval_iters);
  if (!result.ok()) return abort_job("eval", rank, result.status());
  if (rank == 0) {
    std::printf("moefold eval: %s: validation loss %.4f | perplexity %.2f | %lld tokens\n",
                args->load.c_str(), result->loss, std::exp(std::min(result->loss, 50.0)),
                static_cast<long long>(result->tokens));
  }
  return 0;
}

int run_import_hf_command(int argc, char** argv) {
  auto runtime = MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) return report("import-hf", runtime.status());
  const int rank = (*runtime)->world_rank();
  const auto fail = [&](const absl::Status& s) { return rank == 0 ? report("import-hf", s) : 1; };
  if (argc < 1 || argv[0][0] == '-') {
    return fail(absl::InvalidArgumentError("usage: moefold import-hf HF_DIR --config R --output DIR"));
  }
  const std::string hf_dir = argv[0];
  auto args = parse_command_args("import-hf", argc - 1, argv + 1, {"--config", "--set", "--output"});
  if (!args.ok()) return fail(args.status());
  if (args->output.empty()) return fail(absl::InvalidArgumentError("--output DIR is required"));
  if (std::filesystem::exists(args->output)) {
    return fail(absl::AlreadyExistsError(args->output + ": already exists; import-hf writes a "
                                         "new checkpoint directory only"));
  }
  auto job = start_job(*args, std::move(*runtime));
  if (!job.ok()) return fail(job.status());
  job->recipe.checkpoint.save = args->output;

  // The trainer builds the model (and the optimizer, whose fresh state is saved beside it) exactly
  // as `train` will, so that `train --load DIR` starts from these weights at iteration 0.
  auto trainer = Trainer::create(job->recipe, *job->ctx);
  if (!trainer.ok()) return abort_job("import-hf", rank, trainer.status());
  if (absl::Status s = load_hf_into(**trainer, hf_dir, rank); !s.ok()) {
    return abort_job("import-hf", rank, s);
  }
  if (absl::Status s = (*trainer)->save_checkpoint(0); !s.ok()) {
    return abort_job("import-hf", rank, s);
  }
  return 0;
}

int run_preprocess_command(int argc, char** argv) {
  auto options = parse_preprocess_args(argc, argv);
  if (!options.ok()) return report("preprocess", options.status());
  if (absl::Status s = run_preprocess(*options); !s.ok()) return report("preprocess", s);
  return 0;
}

}  // namespace moefold
