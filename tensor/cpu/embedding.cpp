#include "tensor/cpu/embedding.h"

#include <cstring>

#include "tensor/check.h"

namespace moefold::cpu {
namespace {

// The token's row in the table, or −1 when another shard holds it.
int64_t table_row(int32_t token, int64_t n, int64_t V, int64_t first_row, int64_t rows) {
  MOEFOLD_CHECK(token >= 0 && token < V, "token id " << token << " at " << n
                                                     << " outside vocabulary of " << V);
  const int64_t row = int64_t{token} - first_row;
  return row >= 0 && row < rows ? row : -1;
}

}  // namespace

void embedding_forward(const int32_t* tokens_N, const float* table_rH, float* out_NH, int64_t N,
                       int64_t V, int64_t first_row, int64_t rows, int64_t H) {
  const size_t row_bytes = static_cast<size_t>(H) * sizeof(float);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = table_row(tokens_N[n], n, V, first_row, rows);
    if (row >= 0) {
      std::memcpy(out_NH + n * H, table_rH + row * H, row_bytes);
    } else {
      std::memset(out_NH + n * H, 0, row_bytes);
    }
  }
}

void embedding_backward(const float* dout_NH, const int32_t* tokens_N, float* dtable_rH,
                        int64_t N, int64_t V, int64_t first_row, int64_t rows, int64_t H) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = table_row(tokens_N[n], n, V, first_row, rows);
    if (row < 0) continue;
    float* out = dtable_rH + row * H;
    const float* grad = dout_NH + n * H;
    for (int64_t h = 0; h < H; ++h) out[h] += grad[h];
  }
}

}  // namespace moefold::cpu
