// Time of one (micro-batch, chunk) on one rank: GEMMs from the device peak and the cluster's
// efficiency curve by GEMM shape, the attention core, memory-bound element-wise work, and the
// exposed part of each communication (alpha-beta, collectives.h) under the configured overlap.
// The MoE layer's experts and all-to-all run at the straggler's load (Workload::imbalance).
#pragma once

#include "parallel/layout.h"
#include "planner/cluster.h"
#include "planner/collectives.h"
#include "planner/workload.h"

namespace moefold {

// Seconds by kind, for one pass or summed over a step.
struct TimeParts {
  double gemm = 0;         // dense GEMMs: attention projections, dense / shared MLPs, router, head
  double experts = 0;      // routed experts' GEMMs (the straggler's rows)
  double attention = 0;    // attention core (QKᵀ, softmax, PV)
  double elementwise = 0;  // norms, RoPE, SwiGLU, permutations, residual adds, kernel launches
  double tp_comm = 0;      // exposed TP / SP collectives
  double cp_comm = 0;      // exposed ring-attention K/V exchange
  double ep_comm = 0;      // exposed all-to-all (or all-gather) dispatch and combine
  double fssdp_comm = 0;   // exposed FSSDP expert gathers and gradient reduce-scatters
  double total() const {
    return gemm + experts + attention + elementwise + tp_comm + cp_comm + ep_comm + fssdp_comm;
  }
  TimeParts& operator+=(const TimeParts& o);
};
TimeParts operator*(double s, const TimeParts& t);

// One (micro-batch, chunk): forward F, backward's input-gradient part B and weight-gradient
// part W (zero-bubble schedules move W; the others run B and W together).
struct ChunkTime {
  TimeParts forward, backward_input, backward_weight;
  double f() const { return forward.total(); }
  double b() const { return backward_input.total(); }
  double w() const { return backward_weight.total(); }
};

// Communication spans of the layout's groups on this cluster.
struct GroupSpans {
  GroupSpan tp, cp, pp, dp_cp, etp_ep, edp;
};
GroupSpans layout_spans(const RankLayout& layout, const ClusterSpec& cluster);

// Seconds of one GEMM C(m,n) = A(m,k) B(k,n) at the curve's efficiency for min(m, n, k).
double gemm_seconds(double m, double n, double k, const ClusterSpec& cluster);

ChunkTime chunk_time(const Workload& w, const ClusterSpec& cluster, const GroupSpans& spans,
                     int stage, int chunk);

// Per step, outside the pipeline: the data-parallel gradient reductions and parameter gathers,
// exposed as configured, and the optimizer (memory-bound over the owned elements).
struct StepExtras {
  double dp_reduce = 0, dp_gather = 0;  // full durations
  // What overlap leaves: the reductions after the stage's last backward, the gathers before its
  // first forward.
  double reduce_exposed = 0, gather_exposed = 0;
  double optimizer = 0;
};
StepExtras step_extras(const Workload& w, const ClusterSpec& cluster, const GroupSpans& spans,
                       int stage, double last_backward_seconds, double first_forward_seconds);

}  // namespace moefold
