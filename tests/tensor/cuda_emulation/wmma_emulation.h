// nvcuda::wmma for the emulated kernels (cuda_emulation.h): bf16 × bf16 → float32 fragments of
// 16 × 16 × 16, as the CUDA guide specifies them. Operand fragments hold the whole matrix in
// every lane; an accumulator's element e belongs to lane e % 32, which alone computes and
// stores it, so the lanes' parts of a result meet in memory only, as on the GPU.
#pragma once

#include <cstdint>
#include <source_location>
#include <string>
#include <type_traits>

#include "tensor/kernel_math.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has 16 × 16 × 16 fragments only");
  float value[16][16];  // (row, column) of the fragment's matrix
};

namespace detail {

inline void check_operand(const void* pointer, unsigned ldm, size_t element_bytes,
                          const std::source_location& site) {
  if (reinterpret_cast<uintptr_t>(pointer) % 32 != 0) {
    moefold::cuda_emulation::fail("WMMA pointer not 256-bit aligned", site);
  }
  if (ldm * element_bytes % 16 != 0) {
    moefold::cuda_emulation::fail(
        "WMMA leading dimension " + std::to_string(ldm) + " not a multiple of 16 bytes", site);
  }
}

inline unsigned lane() { return moefold::cuda_emulation::lane_id(); }

// Element (row, column) of a matrix stored row-major (or column-major) with leading dim ldm.
inline int64_t at(int row, int column, unsigned ldm, bool row_major) {
  return row_major ? int64_t{row} * ldm + column : int64_t{column} * ldm + row;
}

}  // namespace detail

template <class Use, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, Layout>& f,
                      const __nv_bfloat16* pointer, unsigned ldm,
                      std::source_location site = std::source_location::current()) {
  static_assert(!std::is_same_v<Use, accumulator>, "bf16 accumulators are not emulated");
  detail::check_operand(pointer, ldm, sizeof(*pointer), site);
  moefold::cuda_emulation::warp_barrier(site);  // the guide: waits until every lane arrives
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      f.value[r][c] = moefold::bf16_bits_to_float(
          pointer[detail::at(r, c, ldm, std::is_same_v<Layout, row_major>)].bits);
    }
  }
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float value) {
  for (auto& row : f.value) {
    for (float& x : row) x = value;
  }
}

template <class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  for (unsigned e = detail::lane(); e < 256; e += 32) {  // this lane's elements
    const unsigned r = e / 16, col = e % 16;
    float sum = c.value[r][col];
    for (int k = 0; k < 16; ++k) sum += a.value[r][k] * b.value[k][col];
    d.value[r][col] = sum;
  }
}

inline void store_matrix_sync(float* pointer, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout,
                              std::source_location site = std::source_location::current()) {
  detail::check_operand(pointer, ldm, sizeof(*pointer), site);
  moefold::cuda_emulation::warp_barrier(site);
  for (unsigned e = detail::lane(); e < 256; e += 32) {
    const int r = e / 16, c = e % 16;
    pointer[detail::at(r, c, ldm, layout == mem_row_major)] = f.value[r][c];
  }
}

}  // namespace nvcuda::wmma
