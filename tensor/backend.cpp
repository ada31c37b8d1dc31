#include "tensor/backend.h"

#include <array>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "tensor/check.h"
#include "tensor/cpu/cpu_backend.h"

namespace moefold {
namespace {

constexpr size_t kDevices = 2;

struct Registry {
  std::mutex mutex;
  std::array<std::unique_ptr<Backend>, kDevices> backends;
};

Registry& registry() {
  static Registry* r = [] {
    auto* created = new Registry;  // never destroyed: tensors may outlive static destructors
    created->backends[static_cast<size_t>(Device::kCpu)] = cpu::make_cpu_backend();
    return created;
  }();
  return *r;
}

struct FinishedHostCopy final : PendingHostCopy {
  void finish() override {}
};

}  // namespace

std::unique_ptr<PendingHostCopy> Backend::start_copy_to_host(void* host_dst, const void* src,
                                                             size_t bytes) {
  copy_to_host(host_dst, src, bytes);
  return std::make_unique<FinishedHostCopy>();
}

void Backend::widen_bf16(const uint16_t*, float*, int64_t) {
  throw std::runtime_error(std::string("not supported yet on ") + device_name(device()) +
                           ": bfloat16 tensors (no bf16 conversion kernel)");
}

void Backend::round_to_bf16(const float*, uint16_t*, int64_t) {
  throw std::runtime_error(std::string("not supported yet on ") + device_name(device()) +
                           ": bfloat16 tensors (no bf16 conversion kernel)");
}

double Backend::square_sum_total(std::span<const float* const> xs, std::span<const int64_t> ns) {
  double total = 0.0;
  for (size_t i = 0; i < xs.size(); ++i) total += square_sum(xs[i], ns[i]);
  return total;
}

namespace {

// The operands of one op as float32 pointers (the default of the mixed-precision entry points):
// a bf16 operand is widened exactly into a float32 temporary, and finish() rounds the written
// ones back, nearest even.
class Widened {
 public:
  explicit Widened(Backend& backend) : backend_(backend) {}
  const float* in(GemmInput t, int64_t n) { return widen(t.data, t.dtype, n, false); }
  float* out(GemmOutput t, int64_t n) { return widen(t.data, t.dtype, n, true); }
  const float* in(const uint16_t* t, int64_t n) { return widen(t, DType::kBFloat16, n, false); }
  float* out(uint16_t* t, int64_t n) { return widen(t, DType::kBFloat16, n, true); }
  void finish() {
    for (const auto& [wide, narrow] : written_) {
      backend_.round_to_bf16(wide.data(), static_cast<uint16_t*>(narrow), wide.numel());
    }
  }

 private:
  float* widen(const void* data, DType dtype, int64_t n, bool written) {
    if (dtype == DType::kFloat32) return static_cast<float*>(const_cast<void*>(data));
    Tensor wide = Tensor::empty({n}, DType::kFloat32, backend_.device());
    backend_.widen_bf16(static_cast<const uint16_t*>(data), wide.data(), n);
    if (written) written_.emplace_back(wide, const_cast<void*>(data));
    temporaries_.push_back(wide);
    return wide.data();
  }

  Backend& backend_;
  std::vector<Tensor> temporaries_;
  std::vector<std::pair<Tensor, void*>> written_;  // (float32 result, bf16 destination)
};

}  // namespace

void Backend::linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y, int64_t N, int64_t I,
                                   int64_t O, bool accumulate) {
  Widened g(*this);
  linear_forward(g.in(x, N * I), g.in(w, O * I), g.out(y, N * O), N, I, O, accumulate);
  g.finish();
}

void Backend::linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx, int64_t N,
                                       int64_t I, int64_t O, bool accumulate) {
  Widened g(*this);
  linear_backward_dx(g.in(dy, N * O), g.in(w, O * I), g.out(dx, N * I), N, I, O, accumulate);
  g.finish();
}

void Backend::linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw, int64_t N,
                                       int64_t I, int64_t O) {
  Widened g(*this);
  linear_backward_dw(g.in(dy, N * O), g.in(x, N * I), g.out(dw, O * I), N, I, O);
  g.finish();
}

void Backend::grouped_linear_forward_mixed(GemmInput x, GemmInput w, GemmOutput y,
                                           const int64_t* offsets, int64_t G, int64_t I,
                                           int64_t O) {
  const int64_t N = offsets[G];
  Widened g(*this);
  grouped_linear_forward(g.in(x, N * I), g.in(w, G * O * I), g.out(y, N * O), offsets, G, I, O);
  g.finish();
}

void Backend::grouped_linear_backward_dx_mixed(GemmInput dy, GemmInput w, GemmOutput dx,
                                               const int64_t* offsets, int64_t G, int64_t I,
                                               int64_t O, bool accumulate) {
  const int64_t N = offsets[G];
  Widened g(*this);
  grouped_linear_backward_dx(g.in(dy, N * O), g.in(w, G * O * I), g.out(dx, N * I), offsets, G,
                             I, O, accumulate);
  g.finish();
}

void Backend::grouped_linear_backward_dw_mixed(GemmInput dy, GemmInput x, GemmOutput dw,
                                               const int64_t* offsets, int64_t G, int64_t I,
                                               int64_t O) {
  const int64_t N = offsets[G];
  Widened g(*this);
  grouped_linear_backward_dw(g.in(dy, N * O), g.in(x, N * I), g.out(dw, G * O * I), offsets, G,
                             I, O);
  g.finish();
}

void Backend::attention_forward_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v,
                                     uint16_t* o, float* lse, const int32_t* q_pos,
                                     const int32_t* k_pos, int64_t B, int64_t Sq, int64_t Skv,
                                     int64_t nh, int64_t nkv, int64_t d) {
  const int64_t q_size = B * Sq * nh * d, kv_size = B * Skv * nkv * d;
  Widened g(*this);
  attention_forward(g.in(q, q_size), g.in(k, kv_size), g.in(v, kv_size), g.out(o, q_size), lse,
                    q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
  g.finish();
}

void Backend::attention_backward_bf16(const uint16_t* dout, const uint16_t* q, const uint16_t* k,
                                      const uint16_t* v, const uint16_t* o, const float* lse,
                                      uint16_t* dq, GemmOutput dk, GemmOutput dv,
                                      const int32_t* q_pos, const int32_t* k_pos, int64_t B,
                                      int64_t Sq, int64_t Skv, int64_t nh, int64_t nkv,
                                      int64_t d) {
  const int64_t q_size = B * Sq * nh * d, kv_size = B * Skv * nkv * d;
  Widened g(*this);
  attention_backward(g.in(dout, q_size), g.in(q, q_size), g.in(k, kv_size), g.in(v, kv_size),
                     g.in(o, q_size), lse, g.out(dq, q_size), g.out(dk, kv_size),
                     g.out(dv, kv_size), q_pos, k_pos, B, Sq, Skv, nh, nkv, d);
  g.finish();
}

void Backend::attention_merge_bf16(uint16_t* o_a, float* lse_a, const uint16_t* o_b,
                                   const float* lse_b, int64_t B, int64_t Sq, int64_t nh,
                                   int64_t d) {
  const int64_t o_size = B * Sq * nh * d;
  Widened g(*this);
  attention_merge(g.out(o_a, o_size), lse_a, g.in(o_b, o_size), lse_b, B, Sq, nh, d);
  g.finish();
}

void Backend::rmsnorm_forward_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd,
                                   int64_t N, int64_t H, float eps) {
  Widened g(*this);
  rmsnorm_forward(g.in(x, N * H), g.in(w, H), g.out(y, N * H), rstd, N, H, eps);
  g.finish();
}

void Backend::rmsnorm_backward_bf16(const uint16_t* dy, const uint16_t* x, const uint16_t* w,
                                    const float* rstd, uint16_t* dx, float* dw, int64_t N,
                                    int64_t H, bool accumulate_dx) {
  Widened g(*this);
  rmsnorm_backward(g.in(dy, N * H), g.in(x, N * H), g.in(w, H), rstd, g.out(dx, N * H), dw, N, H,
                   accumulate_dx);
  g.finish();
}

void Backend::rope_forward_bf16(const uint16_t* x, uint16_t* y, const int32_t* positions,
                                int64_t N, int64_t heads, int64_t d, float base) {
  Widened g(*this);
  rope_forward(g.in(x, N * heads * d), g.out(y, N * heads * d), positions, N, heads, d, base);
  g.finish();
}

void Backend::rope_backward_bf16(const uint16_t* dy, uint16_t* dx, const int32_t* positions,
                                 int64_t N, int64_t heads, int64_t d, float base) {
  Widened g(*this);
  rope_backward(g.in(dy, N * heads * d), g.out(dx, N * heads * d), positions, N, heads, d, base);
  g.finish();
}

void Backend::swiglu_forward_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out,
                                  int64_t n) {
  Widened g(*this);
  swiglu_forward(g.in(gate, n), g.in(up, n), g.out(out, n), n);
  g.finish();
}

void Backend::swiglu_backward_bf16(const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                                   uint16_t* dgate, uint16_t* dup, int64_t n) {
  Widened g(*this);
  swiglu_backward(g.in(dout, n), g.in(gate, n), g.in(up, n), g.out(dgate, n), g.out(dup, n), n);
  g.finish();
}

void Backend::permute_tokens_bf16(const uint16_t* x, const int32_t* perm, uint16_t* out,
                                  int64_t N, int64_t R, int64_t K, int64_t H) {
  Widened g(*this);
  permute_tokens(g.in(x, N * H), perm, g.out(out, R * H), R, K, H);
  g.finish();
}

void Backend::permute_tokens_backward_bf16(const uint16_t* dout, const int32_t* perm,
                                           uint16_t* dx, int64_t N, int64_t R, int64_t K,
                                           int64_t H) {
  Widened g(*this);
  permute_tokens_backward(g.in(dout, R * H), perm, g.out(dx, N * H), R, K, H);
  g.finish();
}

void Backend::combine_tokens_bf16(const uint16_t* y, const int32_t* perm, const float* weights,
                                  uint16_t* out, int64_t N, int64_t R, int64_t K, int64_t H) {
  Widened g(*this);
  combine_tokens(g.in(y, R * H), perm, weights, g.out(out, N * H), R, K, H);
  g.finish();
}

void Backend::combine_tokens_backward_bf16(const uint16_t* dout, const uint16_t* y,
                                           const int32_t* perm, const float* weights,
                                           uint16_t* dy, float* dweights, int64_t N, int64_t R,
                                           int64_t K, int64_t H) {
  Widened g(*this);
  combine_tokens_backward(g.in(dout, N * H), g.in(y, R * H), perm, weights, g.out(dy, R * H),
                          dweights, R, K, H);
  g.finish();
}

void Backend::embedding_forward_bf16(const int32_t* tokens, const uint16_t* table, uint16_t* out,
                                     int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                     int64_t H) {
  Widened g(*this);
  embedding_forward(tokens, g.in(table, rows * H), g.out(out, N * H), N, V, first_row, rows, H);
  g.finish();
}

void Backend::embedding_backward_bf16(const uint16_t* dout, const int32_t* tokens, float* dtable,
                                      int64_t N, int64_t V, int64_t first_row, int64_t rows,
                                      int64_t H) {
  Widened g(*this);
  embedding_backward(g.in(dout, N * H), tokens, dtable, N, V, first_row, rows, H);
}

void Backend::add_bf16(uint16_t* y, const uint16_t* x, int64_t n) {
  Widened g(*this);
  add(g.out(y, n), g.in(x, n), n);
  g.finish();
}

void Backend::axpy_bf16(uint16_t* y, float a, const uint16_t* x, int64_t n) {
  Widened g(*this);
  axpy(g.out(y, n), a, g.in(x, n), n);
  g.finish();
}

void Backend::cross_entropy_forward_backward_bf16(const uint16_t* h, const uint16_t* w,
                                                  const int32_t* labels, const float* mask,
                                                  float grad_scale, uint16_t* dh, float* dw,
                                                  double* loss_sum, int64_t N, int64_t H,
                                                  int64_t V, int64_t chunk_rows) {
  Widened g(*this);
  cross_entropy_forward_backward(g.in(h, N * H), g.in(w, V * H), labels, mask, grad_scale,
                                 dh != nullptr ? g.out(dh, N * H) : nullptr, dw, loss_sum, N, H,
                                 V, chunk_rows);
  g.finish();
}

Backend& backend_for(Device device) {
  Registry& r = registry();
  Backend* backend = r.backends[static_cast<size_t>(device)].get();
  if (backend == nullptr) {
    throw std::runtime_error(std::string("no ") + device_name(device) +
                             " backend: this build or this machine has no such device");
  }
  return *backend;
}

void register_backend(std::unique_ptr<Backend> backend) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const size_t slot = static_cast<size_t>(backend->device());
  MOEFOLD_CHECK(slot < kDevices && !r.backends[slot], "backend registered twice");
  r.backends[slot] = std::move(backend);
}

bool has_backend(Device device) {
  return registry().backends[static_cast<size_t>(device)] != nullptr;
}

Device device_of_pointer(const void* ptr) {
  for (const auto& backend : registry().backends) {
    if (backend && backend->device() != Device::kCpu && backend->owns(ptr)) {
      return backend->device();
    }
  }
  return Device::kCpu;
}

}  // namespace moefold
