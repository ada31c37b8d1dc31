// `moefold plan`: the planner's prediction for a recipe's layout on a cluster, or (--search) the
// best layouts for N GPUs. No MPI: it runs in one process anywhere.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "launch/commands.h"
#include "planner/routing_skew.h"
#include "planner/plan.h"
#include "planner/search.h"
#include "trainer/config_parse.h"

namespace moefold {
namespace {

struct PlanArgs {
  std::string config, cluster, routing_metrics;
  std::vector<std::string> overrides;
  int gpus = 0;
  double imbalance = 1;
  bool json = false, search = false;
  int top = 10;
};

absl::StatusOr<PlanArgs> parse_plan_args(int argc, char** argv) {
  PlanArgs a;
  for (int i = 0; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json") {
      a.json = true;
      continue;
    }
    if (flag == "--search") {
      a.search = true;
      continue;
    }
    if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(flag, " needs a value"));
    const std::string value = argv[++i];
    if (flag == "--config") {
      a.config = value;
    } else if (flag == "--cluster") {
      a.cluster = value;
    } else if (flag == "--set") {
      a.overrides.push_back(value);
    } else if (flag == "--routing-from") {
      a.routing_metrics = value;
    } else if (flag == "--gpus" || flag == "--top") {
      int n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, " must be a positive integer, got '", value, "'"));
      }
      (flag == "--gpus" ? a.gpus : a.top) = n;
    } else if (flag == "--routing-imbalance") {
      if (!absl::SimpleAtod(value, &a.imbalance) || !(a.imbalance >= 1)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--routing-imbalance is max/mean tokens per EP rank, >= 1; got '", value, "'"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown argument '", flag,
          "' (accepted: --config --cluster --gpus --set --json --search --top "
          "--routing-imbalance --routing-from)"));
    }
  }
  if (a.config.empty()) return absl::InvalidArgumentError("--config RECIPE.yaml is required");
  if (a.cluster.empty()) return absl::InvalidArgumentError("--cluster CLUSTER.yaml is required");
  return a;
}

int fail(const absl::Status& status) {
  std::fprintf(stderr, "moefold plan: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int run_plan_command(int argc, char** argv) {
  auto args = parse_plan_args(argc, argv);
  if (!args.ok()) return fail(args.status());
  auto recipe = load_recipe(args->config, args->overrides);
  if (!recipe.ok()) return fail(recipe.status());
  auto cluster = load_cluster(args->cluster);
  if (!cluster.ok()) return fail(cluster.status());
  const ParallelConfig& p = recipe->parallel;
  // Without --gpus: the recipe's layout with one data-parallel replica.
  const int gpus = args->gpus > 0 ? args->gpus
                                  : p.tensor_model_parallel_size * p.context_parallel_size *
                                        p.pipeline_model_parallel_size;
  PlanOptions options;
  options.routing_imbalance = args->imbalance;
  if (!args->routing_metrics.empty()) {
    auto skew = routing_imbalance_from_metrics(args->routing_metrics,
                                               recipe->model.moe.num_experts,
                                               p.expert_model_parallel_size);
    if (!skew.ok()) return fail(skew.status());
    options.routing_imbalance = *skew;
  }
  if (args->search) {
    auto result = search_layouts(*recipe, *cluster, gpus, options);
    if (!result.ok()) return fail(result.status());
    std::cout << format_search_table(*result, args->top);
    return result->fits.empty() ? 1 : 0;
  }
  auto plan = make_plan(*recipe, *cluster, gpus, options);
  if (!plan.ok()) return fail(plan.status());
  std::cout << (args->json ? format_plan_json(*plan) : format_plan_text(*plan));
  return 0;
}

}  // namespace moefold
