#include "tensor/cpu/embedding.h"

#include <cstring>

#include "tensor/check.h"

namespace moefold::cpu {

void embedding_forward(const int32_t* tokens_N, const float* table_VH, float* out_NH, int64_t N,
                       int64_t V, int64_t H) {
  for (int64_t n = 0; n < N; ++n) {
    const int32_t token = tokens_N[n];
    MOEFOLD_CHECK(token >= 0 && token < V, "token id " << token << " at " << n
                                                       << " outside vocabulary of " << V);
    std::memcpy(out_NH + n * H, table_VH + token * H, static_cast<size_t>(H) * sizeof(float));
  }
}

void embedding_backward(const float* dout_NH, const int32_t* tokens_N, float* dtable_VH,
                        int64_t N, int64_t V, int64_t H) {
  for (int64_t n = 0; n < N; ++n) {
    const int32_t token = tokens_N[n];
    MOEFOLD_CHECK(token >= 0 && token < V, "token id " << token << " at " << n
                                                       << " outside vocabulary of " << V);
    float* row = dtable_VH + token * H;
    const float* grad = dout_NH + n * H;
    for (int64_t h = 0; h < H; ++h) row[h] += grad[h];
  }
}

}  // namespace moefold::cpu
