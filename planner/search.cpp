#include "planner/search.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moefold {
namespace {

std::vector<int> divisors(int n) {
  std::vector<int> out;
  for (int d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

}  // namespace

absl::StatusOr<SearchResult> search_layouts(const Recipe& recipe, const ClusterSpec& cluster,
                                            int gpus, const PlanOptions& options) {
  Recipe base = recipe;
  if (absl::Status s = resolve_vocabulary(base); !s.ok()) return s;
  const int experts = std::max(1, base.model.moe.num_experts);
  const int layers = base.model.num_layers;
  const int global_batch = base.training.global_batch_size;
  SearchResult result;
  for (int tp : divisors(gpus)) {
    if (tp > cluster.ranks_per_node) continue;
    for (int cp : divisors(gpus / tp)) {
      for (int pp : divisors(gpus / (tp * cp))) {
        const int dp = gpus / (tp * cp * pp);
        std::vector<int> vpps = {0};
        for (int v = 2; pp > 1 && v <= layers / pp; ++v) {
          if (layers % (pp * v) == 0) vpps.push_back(v);
        }
        for (int ep : divisors(gpus / pp)) {
          if (experts % ep != 0) continue;
          for (int etp : divisors(gpus / (pp * ep))) {
            if (etp > cluster.ranks_per_node) continue;
            for (int mb = 1; mb <= 64; mb *= 2) {
              if (global_batch > 0 && global_batch % (mb * dp) != 0) continue;
              for (int vpp : vpps) {
                Recipe r = base;
                ParallelConfig& p = r.parallel;
                p.tensor_model_parallel_size = tp;
                p.context_parallel_size = cp;
                p.pipeline_model_parallel_size = pp;
                p.virtual_pipeline_model_parallel_size = vpp;
                p.expert_model_parallel_size = ep;
                p.expert_tensor_parallel_size = etp;
                p.decoder_first_pipeline_num_layers = 0;
                p.decoder_last_pipeline_num_layers = 0;
                r.training.micro_batch_size = mb;
                ++result.candidates;
                auto workload = make_workload(r, gpus, options.routing_imbalance);
                if (!workload.ok()) continue;
                ++result.valid;
                auto plan = plan_workload(*workload, cluster);
                if (!plan.ok()) return plan.status();
                if (plan->fits) result.fits.push_back(std::move(*plan));
              }
            }
          }
        }
      }
    }
  }
  std::stable_sort(result.fits.begin(), result.fits.end(), [](const Plan& a, const Plan& b) {
    return a.tokens_per_s_per_gpu > b.tokens_per_s_per_gpu;
  });
  return result;
}

std::string format_search_table(const SearchResult& result, int top) {
  std::string out = absl::StrFormat(
      "%d layouts tried, %d valid, %d fit; the best %d by predicted tokens/s per GPU:\n",
      result.candidates, result.valid, static_cast<int>(result.fits.size()),
      std::min<int>(top, result.fits.size()));
  absl::StrAppend(&out, absl::StrFormat("%4s  %-46s %-22s %12s %7s %10s %10s\n", "rank",
                                        "layout", "schedule", "tok/s/GPU", "MFU", "mem GiB",
                                        "step s"));
  for (int i = 0; i < std::min<int>(top, result.fits.size()); ++i) {
    const Plan& p = result.fits[i];
    absl::StrAppend(&out, absl::StrFormat("%4d  %-46s %-22s %12.1f %6.1f%% %10.2f %10.3f\n", i + 1,
                                          describe_layout(p.workload),
                                          pipeline_schedule_kind_name(p.workload.schedule),
                                          p.tokens_per_s_per_gpu, 100 * p.mfu,
                                          p.memory.total() / (1 << 30), p.step_seconds));
  }
  return out;
}

}  // namespace moefold
