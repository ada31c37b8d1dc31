// Data-parallel overlap benchmark: how much of the gradient reduction hides behind backward.
//
//   mpirun --allow-run-as-root --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS=1 \
//     build/tests/bench/moefold_bench_data_parallel [--steps N] [--set key=value ...]
//
// Trains the demo recipe (configs/demo.yaml or --config PATH, with the overrides given) for a few
// steps with overlap_grad_reduce off and then on, and prints per step: the step time, the time the
// step waited for gradient reductions (and, with the distributed optimizer, parameter gathers), and
// the time of the reductions alone (every bucket launched and waited for with nothing else to do).
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
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

// Means over `steps` steps after one warm-up step; maximum over ranks unless named _min.
Timings run(const std::vector<std::string>& overrides, int steps, const std::string& config) {
  auto recipe = load_recipe(config, overrides);
  if (!recipe.ok()) throw std::runtime_error(std::string(recipe.status().message()));
  auto ctx = ParallelContext::create(recipe->parallel, MPI_COMM_WORLD);
  if (!ctx.ok()) throw std::runtime_error(std::string(ctx.status().message()));
  auto trainer = Trainer::create(*recipe, *ctx);
  if (!trainer.ok()) throw std::runtime_error(std::string(trainer.status().message()));
  DataParallelState& dp = (*trainer)->data_parallel();
  Timings t;
  t.buckets = dp.num_buckets();
  for (int i = 0; i <= steps; ++i) {
    const double grad0 = dp.grad_reduce_wait_seconds(), gather0 = dp.param_gather_wait_seconds();
    auto m = (*trainer)->train_step(i);
    if (!m.ok()) throw std::runtime_error(std::string(m.status().message()));
    if (i == 0) continue;  // warm-up
    t.step += m->step_seconds / steps;
    t.grad_wait += (dp.grad_reduce_wait_seconds() - grad0) / steps;
    t.gather_wait += (dp.param_gather_wait_seconds() - gather0) / steps;
  }
  dp.wait_all_param_gathers();
  for (int i = 0; i < steps; ++i) {  // the reductions alone
    dp.start_step();
    ctx->world->barrier();
    const double start = now();
    dp.finish_grad_reduction();
    t.reduction += (now() - start) / steps;
  }
  std::vector<double> v = {t.step, t.grad_wait, t.gather_wait, t.reduction};
  std::vector<double> negated = {-t.grad_wait, -t.gather_wait};
  ctx->world->all_reduce(std::span<double>(v), ReduceOp::kMax);
  ctx->world->all_reduce(std::span<double>(negated), ReduceOp::kMax);
  return {v[0], v[1], v[2], v[3], -negated[0], -negated[1], t.buckets};
}

}  // namespace
}  // namespace moefold

int main(int argc, char** argv) {
  using namespace moefold;
  auto runtime = MpiRuntime::initialize(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  int steps = 4;
  std::string config = "configs/demo.yaml";  // run from the repository root
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
  const bool root = (*runtime)->world_rank() == 0;
  for (bool distributed : {false, true}) {
    Timings off, on;
    for (bool overlap : {false, true}) {
      std::vector<std::string> o = base;
      o.push_back(std::string("parallel.use_distributed_optimizer=") +
                  (distributed ? "true" : "false"));
      o.push_back(std::string("parallel.overlap_grad_reduce=") + (overlap ? "true" : "false"));
      if (distributed)
        o.push_back(std::string("parallel.overlap_param_gather=") + (overlap ? "true" : "false"));
      (overlap ? on : off) = run(o, steps, config);
    }
    if (!root) continue;
    const char* name = distributed ? "distributed optimizer" : "plain all-reduce";
    std::printf("\n== %s, DP %d, %d buckets, mean of %d steps (max over ranks)\n", name,
                (*runtime)->world_size(), on.buckets, steps);
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
