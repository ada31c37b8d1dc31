#include "planner/plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "planner/pipeline_sim.h"

namespace moefold {

absl::StatusOr<Plan> make_plan(const Recipe& recipe, const ClusterSpec& cluster, int world,
                               const PlanOptions& options) {
  auto workload = make_workload(recipe, world, options.routing_imbalance);
  if (!workload.ok()) return workload.status();
  return plan_workload(*workload, cluster);
}

absl::StatusOr<Plan> plan_workload(const Workload& w, const ClusterSpec& cluster) {
  auto layout = build_rank_layout(w.parallel, w.world);
  if (!layout.ok()) return layout.status();
  const GroupSpans spans = layout_spans(*layout, cluster);
  Plan plan;
  plan.spans = spans;
  plan.workload = w;
  plan.cluster_name = cluster.name;

  std::vector<std::vector<ChunkTime>> times(w.pp);
  std::vector<std::vector<ChunkCost>> costs(w.pp);
  double busiest = -1;
  for (int s = 0; s < w.pp; ++s) {
    double busy = 0;
    for (int c = 0; c < w.chunks; ++c) {
      times[s].push_back(chunk_time(w, cluster, spans, s, c));
      const ChunkTime& t = times[s].back();
      costs[s].push_back({t.f(), t.b(), t.w()});
      busy += t.f() + t.b() + t.w();
    }
    if (busy > busiest) {
      busiest = busy;
      plan.time_stage = s;
    }
  }
  const double p2p = w.pp > 1 ? collective_seconds(Collective::kSendRecv,
                                                   w.residual_rows() * w.model.hidden_size *
                                                       cluster.compute_bytes,
                                                   spans.pp, cluster)
                              : 0;
  // Each stage starts once its parameters are gathered and its step ends when its gradient
  // reductions do: a stage that drains early hides more of them.
  std::vector<StepExtras> extras(w.pp);
  std::vector<double> start(w.pp);
  for (int s = 0; s < w.pp; ++s) {
    double first_forward = 0, last_backward = 0;
    for (const ChunkTime& t : times[s]) {
      first_forward += t.f();
      last_backward += t.b() + t.w();
    }
    extras[s] = step_extras(w, cluster, spans, s, last_backward, first_forward);
    start[s] = extras[s].gather_exposed;
  }
  auto finish = simulate_pipeline(w, costs, start, p2p);
  if (!finish.ok()) return finish.status();
  double makespan = 0, end = 0;
  for (int s = 0; s < w.pp; ++s) {
    makespan = std::max(makespan, (*finish)[s]);
    end = std::max(end, (*finish)[s] + extras[s].reduce_exposed);
    plan.optimizer_seconds = std::max(plan.optimizer_seconds, extras[s].optimizer);
  }
  const int s = plan.time_stage;
  for (const ChunkTime& t : times[s]) {
    plan.compute += double(w.micro_batches) * t.forward;
    plan.compute += double(w.micro_batches) * t.backward_input;
    plan.compute += double(w.micro_batches) * t.backward_weight;
  }
  plan.bubble_seconds = std::max(0.0, (*finish)[s] - start[s] - busiest * w.micro_batches);
  plan.dp_seconds = end - (*finish)[s] + start[s];
  plan.step_seconds = end + plan.optimizer_seconds;

  plan.memory = worst_stage_memory(w, cluster);
  Workload recomputed = w;
  recomputed.training.recompute_granularity = RecomputeGranularity::kFull;
  plan.activations_with_full_recompute =
      stage_memory(recomputed, cluster, plan.memory.stage).activations;
  for (int stage = 0; stage < w.pp; ++stage) {
    plan.memory_by_stage.push_back(stage_memory(w, cluster, stage).total());
  }
  plan.memory_capacity = cluster.memory_bytes;
  plan.fits = plan.memory.total() <= cluster.memory_bytes;
  plan.model_flops = model_flops_per_step(w.model, w.training.global_batch_size);
  plan.mfu = plan.model_flops / (plan.step_seconds * w.world * cluster.peak_flops);
  plan.tokens_per_s_per_gpu = double(w.training.global_batch_size) * w.model.seq_length /
                              (plan.step_seconds * w.world);
  return plan;
}

std::string describe_layout(const Workload& w) {
  return absl::StrFormat("TP%d CP%d PP%d VPP%d DP%d | EP%d ETP%d EDP%d | mb%d", w.tp, w.cp, w.pp,
                         w.chunks, w.dp, w.ep, w.etp, w.edp, w.training.micro_batch_size);
}

namespace {

std::string gib(double bytes) { return absl::StrFormat("%9.2f GiB", bytes / (1 << 30)); }
std::string ms(double seconds) { return absl::StrFormat("%10.2f ms", seconds * 1e3); }

std::string span(const char* name, const GroupSpan& g) {
  if (g.size <= 1) return "";
  return absl::StrFormat(" %s %d ranks on %d node%s (%s);", name, g.size, g.nodes,
                         g.nodes > 1 ? "s" : "", g.nodes > 1 ? "inter-node" : "intra-node");
}

const char* recompute_name(RecomputeGranularity g) {
  return g == RecomputeGranularity::kFull ? "full" : "none";
}

}  // namespace

std::string format_plan_text(const Plan& p) {
  const Workload& w = p.workload;
  const MemoryBreakdown& m = p.memory;
  std::string out = absl::StrFormat(
      "moefold plan: %d GPUs of %s | %s | schedule %s, %d micro-batches, recompute %s, "
      "routing imbalance %.2f\n",
      w.world, p.cluster_name, describe_layout(w), pipeline_schedule_kind_name(w.schedule),
      w.micro_batches, recompute_name(w.training.recompute_granularity), w.imbalance);
  const GroupSpans& g = p.spans;
  const std::string groups = absl::StrCat(span("TP", g.tp), span("CP", g.cp), span("PP", g.pp),
                                          span("DP x CP", g.dp_cp), span("ETP x EP", g.etp_ep),
                                          span("EDP", g.edp));
  if (!groups.empty()) absl::StrAppend(&out, "groups:", groups, "\n");
  absl::StrAppend(&out, absl::StrFormat("memory per GPU (pipeline stage %d):\n", m.stage));
  absl::StrAppend(&out, "  parameters              ", gib(m.parameters), "\n");
  absl::StrAppend(&out, "  gradients               ", gib(m.gradients), "\n");
  absl::StrAppend(&out, "  optimizer state         ", gib(m.optimizer_state),
                  absl::StrFormat("   (replicated %s, distributed %s, with FSSDP %s)\n",
                                  gib(m.optimizer_state_replicated),
                                  gib(m.optimizer_state_distributed),
                                  gib(m.optimizer_state_fssdp)));
  absl::StrAppend(&out, "  activations             ", gib(m.activations),
                  absl::StrFormat("   (%.0f stashed micro-batch chunks; %s with full recompute)\n",
                                  m.stashes_in_flight, gib(p.activations_with_full_recompute)));
  absl::StrAppend(&out, "  loss workspace          ", gib(m.loss_workspace), "\n");
  absl::StrAppend(&out, "  communication buffers   ", gib(m.communication_buffers), "\n");
  absl::StrAppend(&out, "  runtime reserve         ", gib(m.reserved), "\n");
  absl::StrAppend(&out, "  total                   ", gib(m.total()), " of ",
                  gib(p.memory_capacity), p.fits ? "  fits\n" : "  DOES NOT FIT\n");
  const TimeParts& t = p.compute;
  absl::StrAppend(&out, absl::StrFormat("step time (pipeline stage %d):\n", p.time_stage));
  absl::StrAppend(&out, "  dense GEMMs             ", ms(t.gemm), "\n");
  absl::StrAppend(&out, "  expert GEMMs            ", ms(t.experts), "\n");
  absl::StrAppend(&out, "  attention core          ", ms(t.attention), "\n");
  absl::StrAppend(&out, "  element-wise, launches  ", ms(t.elementwise), "\n");
  absl::StrAppend(&out, "  TP/SP comm (exposed)    ", ms(t.tp_comm), "\n");
  absl::StrAppend(&out, "  CP comm (exposed)       ", ms(t.cp_comm), "\n");
  absl::StrAppend(&out, "  EP dispatch (exposed)   ", ms(t.ep_comm), "\n");
  absl::StrAppend(&out, "  FSSDP comm (exposed)    ", ms(t.fssdp_comm), "\n");
  absl::StrAppend(&out, "  pipeline bubble         ", ms(p.bubble_seconds), "\n");
  absl::StrAppend(&out, "  DP comm (exposed)       ", ms(p.dp_seconds), "\n");
  absl::StrAppend(&out, "  optimizer               ", ms(p.optimizer_seconds), "\n");
  absl::StrAppend(&out, "  step                    ", ms(p.step_seconds), "\n");
  absl::StrAppend(&out, absl::StrFormat("MFU %.1f%% | %.0f tokens/s per GPU | %s\n", 100 * p.mfu,
                                        p.tokens_per_s_per_gpu, p.fits ? "fits" : "does not fit"));
  return out;
}

std::string format_plan_json(const Plan& p) {
  const Workload& w = p.workload;
  const MemoryBreakdown& m = p.memory;
  const TimeParts& t = p.compute;
  nlohmann::json j = {
      {"mfu", p.mfu},
      {"tokens_per_s_per_gpu", p.tokens_per_s_per_gpu},
      {"memory_bytes_per_gpu", m.total()},
      {"memory_bytes_by_stage", p.memory_by_stage},
      {"step_seconds", p.step_seconds},
      {"fits", p.fits},
      {"cluster", p.cluster_name},
      {"gpus", w.world},
      {"layout",
       {{"tp", w.tp}, {"cp", w.cp}, {"pp", w.pp}, {"vpp", w.chunks}, {"dp", w.dp}, {"ep", w.ep},
        {"etp", w.etp}, {"edp", w.edp}, {"micro_batch_size", w.training.micro_batch_size},
        {"micro_batches", w.micro_batches},
        {"schedule", pipeline_schedule_kind_name(w.schedule)}}},
      {"routing_imbalance", w.imbalance},
      {"memory",
       {{"stage", m.stage}, {"parameters", m.parameters}, {"gradients", m.gradients},
        {"optimizer_state", m.optimizer_state},
        {"optimizer_state_replicated", m.optimizer_state_replicated},
        {"optimizer_state_distributed", m.optimizer_state_distributed},
        {"optimizer_state_fssdp", m.optimizer_state_fssdp}, {"activations", m.activations},
        {"activations_with_full_recompute", p.activations_with_full_recompute},
        {"loss_workspace", m.loss_workspace},
        {"communication_buffers", m.communication_buffers}, {"reserved", m.reserved},
        {"capacity", p.memory_capacity}}},
      {"time",
       {{"stage", p.time_stage}, {"dense_gemm", t.gemm}, {"expert_gemm", t.experts},
        {"attention", t.attention}, {"elementwise", t.elementwise}, {"tp_comm", t.tp_comm},
        {"cp_comm", t.cp_comm}, {"ep_comm", t.ep_comm}, {"fssdp_comm", t.fssdp_comm},
        {"pipeline_bubble", p.bubble_seconds}, {"dp_comm", p.dp_seconds},
        {"optimizer", p.optimizer_seconds}}},
      {"model_flops_per_step", p.model_flops}};
  return j.dump(2) + "\n";
}

}  // namespace moefold
