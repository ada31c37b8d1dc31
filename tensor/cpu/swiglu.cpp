#pragma GCC optimize("tree-vectorize", "no-trapping-math")

#include "tensor/cpu/swiglu.h"

#include <cstring>

#include "tensor/cpu/vec_math.h"

namespace moefold::cpu {

MOEFOLD_ISA_CLONES
void swiglu_forward(const float* gate_NF, const float* up_NF, float* out_NF, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    out_NF[i] = swiglu_value(gate_NF[i], up_NF[i]);
  }
}

// Works on chunks through local buffers: the outputs
// may alias the inputs, and with that possibility GCC would not vectorise a single loop.
MOEFOLD_ISA_CLONES
void swiglu_backward(const float* dout_NF, const float* gate_NF, const float* up_NF,
                     float* dgate_NF, float* dup_NF, int64_t n) {
  constexpr int64_t kChunk = 256;
  float dgate[kChunk], dup[kChunk];
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t count = n - begin < kChunk ? n - begin : kChunk;
    const float* gate = gate_NF + begin;
    const float* up = up_NF + begin;
    const float* dout = dout_NF + begin;
    for (int64_t i = 0; i < count; ++i) swiglu_gradient(dout[i], gate[i], up[i], &dgate[i], &dup[i]);
    std::memcpy(dgate_NF + begin, dgate, count * sizeof(float));
    std::memcpy(dup_NF + begin, dup, count * sizeof(float));
  }
}

}  // namespace moefold::cpu
