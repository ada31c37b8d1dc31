// The router's device-side routing ops of tensor/ops.h (route_forward, route_load_sums,
// route_backward): operand checks, then the backend of the logits' device.
#include "tensor/ops.h"
#include "tensor/ops_operands.h"

namespace moefold::ops {

using internal::expect_numel;
using internal::Operands;
using internal::rows_of;

namespace {

void check_config(const RouterRowConfig& c, const char* op) {
  MOEFOLD_CHECK(c.topk >= 1 && c.topk <= c.experts,
                "ops::" << op << ": top-" << c.topk << " of " << c.experts << " experts");
  if (c.num_groups > 0) {
    MOEFOLD_CHECK(c.num_groups <= kMaxRouterGroups && c.experts % c.num_groups == 0 &&
                      c.group_topk >= 1 && c.group_topk <= c.num_groups &&
                      c.topk % c.group_topk == 0 &&
                      c.topk / c.group_topk <= c.experts / c.num_groups,
                  "ops::" << op << ": group-limited routing over " << c.num_groups
                          << " groups (at most " << kMaxRouterGroups << ", dividing the "
                          << c.experts << " experts), " << c.group_topk << " kept, top-"
                          << c.topk << " (at most " << c.experts / c.num_groups
                          << " per kept group)");
  }
}

// Device memory the op reads or writes by raw pointer must be on the operands' device.
void check_device_memory(const void* ptr, Device device, const char* op, const char* what) {
  MOEFOLD_CHECK(ptr != nullptr && device_of_pointer(ptr) == device,
                "ops::" << op << ": " << what << " is not in " << device_name(device)
                        << " memory");
}

}  // namespace

void route_forward(const Tensor& z, const Tensor& bias, const Tensor& probs, int32_t* idx,
                   const Tensor& gates, const Tensor& lse, const RouterRowConfig& config) {
  check_config(config, "route_forward");
  const int64_t E = config.experts, n = rows_of(z, E);
  expect_numel(probs, n * E, "route_forward probs");
  expect_numel(gates, n * config.topk, "route_forward gates");
  if (bias.defined()) expect_numel(bias, E, "route_forward bias");
  if (lse.defined()) expect_numel(lse, n, "route_forward lse");
  Operands a("route_forward", z);
  if (n > 0) check_device_memory(idx, z.device(), "route_forward", "idx");
  a.backend().route_forward(a.f32(z), bias.defined() ? a.f32(bias) : nullptr, a.f32(probs), idx,
                            a.f32(gates), lse.defined() ? a.f32(lse) : nullptr, n, config);
}

void route_load_sums(const Tensor& probs, const Tensor& lse, std::span<const int32_t> row_group,
                     int64_t groups, double* sums, const RouterRowConfig& config) {
  const int64_t E = config.experts, n = rows_of(probs, E);
  if (lse.defined()) expect_numel(lse, n, "route_load_sums lse");
  MOEFOLD_CHECK(groups >= 0 && (row_group.empty() || static_cast<int64_t>(row_group.size()) == n),
                "ops::route_load_sums: " << row_group.size() << " row groups for " << n
                                         << " rows");
  for (int32_t g : row_group) {
    MOEFOLD_CHECK(g >= 0 && g < groups, "ops::route_load_sums: row group " << g << " of "
                                                                           << groups);
  }
  Operands a("route_load_sums", probs);
  check_device_memory(sums, probs.device(), "route_load_sums", "sums");
  a.backend().route_load_sums(a.f32(probs), lse.defined() ? a.f32(lse) : nullptr,
                              row_group.empty() ? nullptr : row_group.data(), sums, n, groups,
                              config);
}

void route_backward(const Tensor& dgates, std::span<const uint8_t> keep, const Tensor& gates,
                    const Tensor& probs, const Tensor& z, const int32_t* idx, const Tensor& lse,
                    std::span<const int64_t> counts, std::span<const int32_t> row_group,
                    const Tensor& dz, const RouterBackwardConfig& config) {
  const RouterRowConfig& c = config.row;
  check_config(c, "route_backward");
  const int64_t E = c.experts, k = c.topk, n = rows_of(z, E);
  for (const Tensor* t : {&probs, &dz}) expect_numel(*t, n * E, "route_backward (n,E) operand");
  for (const Tensor* t : {&dgates, &gates}) expect_numel(*t, n * k, "route_backward (n,k) operand");
  MOEFOLD_CHECK(keep.empty() || static_cast<int64_t>(keep.size()) == n * k,
                "ops::route_backward: keep of " << keep.size() << " for " << n * k
                                                << " assignments");
  MOEFOLD_CHECK(row_group.empty() || static_cast<int64_t>(row_group.size()) == n,
                "ops::route_backward: " << row_group.size() << " row groups for " << n << " rows");
  const int64_t groups = static_cast<int64_t>(counts.size()) / E;
  if (config.balance) {
    MOEFOLD_CHECK(groups >= 1 && static_cast<int64_t>(counts.size()) == groups * E,
                  "ops::route_backward: " << counts.size() << " balance counts for " << E
                                          << " experts");
    for (int32_t g : row_group) {
      MOEFOLD_CHECK(g >= 0 && g < groups, "ops::route_backward: row group " << g << " of "
                                                                            << groups);
    }
  }
  if (config.z_loss) {
    MOEFOLD_CHECK(lse.defined(), "ops::route_backward: the z-loss needs lse");
    expect_numel(lse, n, "route_backward lse");
  }
  Operands a("route_backward", dgates);
  if (n > 0) check_device_memory(idx, z.device(), "route_backward", "idx");
  a.backend().route_backward(a.f32(dgates), keep.empty() ? nullptr : keep.data(), a.f32(gates),
                             a.f32(probs), a.f32(z), idx, lse.defined() ? a.f32(lse) : nullptr,
                             config.balance ? counts.data() : nullptr,
                             row_group.empty() ? nullptr : row_group.data(), a.f32(dz), n,
                             groups, config);
}

}  // namespace moefold::ops
