// Data-parallel overlap benchmark: how much of the gradient reduction hides behind backward.
//
//   mpirun --allow-run-as-root --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1
//     build/tests/bench/moefold_bench_data_parallel [--steps N] [--set key=value ...]
//
// Trains the demo recipe (configs/demo.yaml or --config PATH, with the overrides given) with
// overlap off and on side by side (plain all-reduce, then the distributed optimizer) and prints
// per step: the step time, the time the step waited for gradient reductions (and parameter
// gathers), and the time of the reductions alone (every bucket launched and waited for with
// nothing else to do). Means over --steps measured steps (default 4).
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel/mpi_runtime.h"
#include "trainer/config_parse.h"
#include "trainer/trainer.h"

namespace moefold {
namespace {

struct Timings {
  double step = 0, grad_wait = 0, gather_wait = 0, reduction = 0;
  // The same waits on the rank that waited least: the one whose backward finished last, so its
  // wait is communication alone, without the other ranks' load imbalance.
  double grad_wait_min = 0, gather_wait_min = 0;
  int buckets = 0;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Run {
  ParallelContext ctx;  // the data-parallel settings are the context's
  std::unique_ptr<Trainer> trainer;
  Timings t;
  int iteration = 0;
};

Run make_run(const std::vector<std::string>& overrides, const std::string& config) {
  auto recipe = load_recipe(config, overrides);
  if (!recipe.ok()) throw std::runtime_error(std::string(recipe.status().message()));
  auto ctx = ParallelContext::create(recipe->parallel, MPI_COMM_WORLD);
  if (!ctx.ok()) throw std::runtime_error(std::string(ctx.status().message()));
  auto trainer = Trainer::create(*recipe, *ctx);
  if (!trainer.ok()) throw std::runtime_error(std::string(trainer.status().message()));
  Run run;
  run.ctx = *ctx;
  run.trainer = std::move(*trainer);
  run.t.buckets = run.trainer->data_parallel().num_buckets();
  return run;
}

// One optimizer step; with `measure` its times are added to the run's means over `steps`.
void step(Run& run, bool measure, int steps) {
  DataParallelState& dp = run.trainer->data_parallel();
  const double grad0 = dp.grad_reduce_wait_seconds(), gather0 = dp.param_gather_wait_seconds();
  auto m = run.trainer->train_step(run.iteration++);
  if (!m.ok()) throw std::runtime_error(std::string(m.status().message()));
  if (!measure) return;
  run.t.step += m->step_seconds / steps;
  run.t.grad_wait += (dp.grad_reduce_wait_seconds() - grad0) / steps;
  run.t.gather_wait += (dp.param_gather_wait_seconds() - gather0) / steps;
}

// The reductions alone: every bucket launched and waited for with nothing else to do.
void time_reductions(Run& run, int steps) {
  DataParallelState& dp = run.trainer->data_parallel();
  dp.wait_all_param_gathers();
  for (int i = 0; i < steps; ++i) {
    dp.start_step();
    run.ctx.world->barrier();
    const double start = now();
    dp.finish_grad_reduction();
    run.t.reduction += (now() - start) / steps;
  }
}

// Means over ranks: maximum, except the _min waits.
Timings over_ranks(const Timings& t, const ParallelContext& ctx) {
  std::vector<double> v = {t.step, t.grad_wait, t.gather_wait, t.reduction};
  std::vector<double> negated = {-t.grad_wait, -t.gather_wait};
  ctx.world->all_reduce(std::span<double>(v), ReduceOp::kMax);
  ctx.world->all_reduce(std::span<double>(negated), ReduceOp::kMax);
  return {v[0], v[1], v[2], v[3], -negated[0], -negated[1], t.buckets};
}

// Overlap off and on side by side, so that both see the same machine load: after a warm-up
// step each, blocks of two steps per setting (in alternating order), the second one measured
// (with overlap_param_gather its forward then waits for gathers launched by its own previous
// step, not ones the other setting's step left time for).
std::pair<Timings, Timings> compare(const std::vector<std::string>& off_overrides,
                                    const std::vector<std::string>& on_overrides, int steps,
                                    const std::string& config) {
  Run off = make_run(off_overrides, config), on = make_run(on_overrides, config);
  step(off, false, steps);
  step(on, false, steps);
  for (int i = 0; i < steps; ++i) {
    for (Run* run : i % 2 == 0 ? std::vector<Run*>{&off, &on} : std::vector<Run*>{&on, &off}) {
      step(*run, false, steps);
      step(*run, true, steps);
    }
  }
  time_reductions(off, steps);
  time_reductions(on, steps);
  return {over_ranks(off.t, off.ctx), over_ranks(on.t, on.ctx)};
}

}  // namespace
}  // namespace moefold

int run_benchmark(int argc, char** argv, moefold::MpiRuntime& runtime);

int main(int argc, char** argv) {
  using namespace moefold;
  auto runtime = MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  // The demo's corpus and vocabulary from any working directory.
  ::setenv("MOEFOLD_DATA_DIR", MOEFOLD_SOURCE_DIR "/data_cache", /*overwrite=*/0);
  try {
    return run_benchmark(argc, argv, **runtime);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moefold_bench_data_parallel: error on rank %d: %s\n",
                 (*runtime)->world_rank(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

int run_benchmark(int argc, char** argv, moefold::MpiRuntime& runtime) {
  using namespace moefold;
  int steps = 4;
  std::string config = MOEFOLD_SOURCE_DIR "/configs/demo.yaml";
  std::vector<std::string> base = {"training.train_iters=100", "training.eval_interval=0",
                                   "logging.run_dir=/tmp/moefold-bench-dp",
                                   "parallel.ddp_bucket_size=1000000"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc)
      steps = std::stoi(argv[++i]);
    else if (arg == "--config" && i + 1 < argc)
      config = argv[++i];
    else if (arg == "--set" && i + 1 < argc)
      base.push_back(argv[++i]);
  }
  const bool root = runtime.world_rank() == 0;
  for (bool distributed : {false, true}) {
    std::vector<std::string> settings[2];
    for (bool overlap : {false, true}) {
      std::vector<std::string>& o = settings[overlap];
      o = base;
      const auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
      o.push_back("parallel.use_distributed_optimizer=" + flag(distributed));
      o.push_back("parallel.overlap_grad_reduce=" + flag(overlap));
      if (distributed) o.push_back("parallel.overlap_param_gather=" + flag(overlap));
    }
    const auto [off, on] = compare(settings[0], settings[1], steps, config);
    if (!root) continue;
    const char* name = distributed ? "distributed optimizer" : "plain all-reduce";
    std::printf("\n== %s, DP %d, %d buckets, mean of %d steps (max over ranks)\n", name,
                runtime.world_size(), on.buckets, steps);
    std::printf("%-8s %9s %14s %14s %16s %16s %12s\n", "overlap", "step s", "grad wait max",
                "grad wait min", "gather wait max", "gather wait min", "reduction s");
    for (const auto& [label, t] : {std::pair{"off", off}, std::pair{"on", on}}) {
      std::printf("%-8s %9.4f %14.4f %14.4f %16.4f %16.4f %12.4f\n", label, t.step, t.grad_wait,
                  t.grad_wait_min, t.gather_wait, t.gather_wait_min, t.reduction);
    }
    const double reduction = 0.5 * (off.reduction + on.reduction);
    std::printf(
        "reductions alone %.4f s; the step waits (min over ranks) %.4f s with overlap off, "
        "%.4f s on: hidden fraction %.3f; step-time ratio on/off %.3f\n",
        reduction, off.grad_wait_min, on.grad_wait_min, 1.0 - on.grad_wait_min / off.grad_wait_min,
        on.step / off.step);
  }
  return 0;
}
