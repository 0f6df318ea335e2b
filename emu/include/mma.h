// Emulated WMMA (nvcuda::wmma) for emu/cuda_emu.h: shadows the toolkit's mma.h in the emulated build only.
// A fragment holds the WHOLE 16x16 tile in every lane (element (i, j) at x[i * 16 + j]): each lane loads the full
// tile, mma_sync computes the full product in fp32, store writes the full tile (every lane writes identical values).
// That is correct for code that treats fragments as opaque, which is all the real API allows without knowing the
// per-architecture layout; code that indexes x[] per lane would need the real layout and is not supported.
// load/store are warp collectives ("_sync"): each starts with a warp barrier, so that no lane stores a tile before
// every lane has loaded the previous contents (lanes run one after another here; on the GPU the warp does the
// load as one operation). Numerics: products and sums in fp32 in k order; tensor cores may differ in the last bits.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "emu/cuda_emu.h"

#include <cstddef>
#include <cstring>
#include <type_traits>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float emu_to_float(float v) { return v; }
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
// fp16 -> fp32 without the toolkit's host loop for subnormals (exact; fp16 fragments are converted per mma_sync)
inline float emu_to_float(__half v) {
  const unsigned h = static_cast<__half_raw>(v).x, sign = (h & 0x8000u) << 16, em = h & 0x7fffu;
  unsigned bits;
  if (em >= 0x7c00u)
    bits = sign | 0x7f800000u | ((em & 0x3ffu) << 13);  // inf / NaN
  else if (em >= 0x0400u)
    bits = sign | ((em << 13) + (112u << 23));  // normal: rebias the exponent 15 -> 127
  else {
    float f = static_cast<float>(em) * 5.9604644775390625e-8f;  // subnormal / zero: em * 2^-24, exact
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = sizeof(Use) && std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  T x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (auto& e : f.x) e = T(v);
}

// matrix_a / matrix_b: the layout is a type parameter.
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>, "matrix_a/b need a layout");
  ::emu::warp_exchange(0xffffffffu, 0, -1, "wmma::load_matrix_sync");
  using F = fragment<Use, M, N, K, T, L>;
  for (int i = 0; i < F::rows; ++i)
    for (int j = 0; j < F::cols; ++j)
      f.x[i * F::cols + j] = std::is_same_v<L, row_major> ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i];
}
// accumulator: the layout is a run-time argument.
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t l) {
  ::emu::warp_exchange(0xffffffffu, 0, -1, "wmma::load_matrix_sync");
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) f.x[i * N + j] = l == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i];
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t l) {
  ::emu::warp_exchange(0xffffffffu, 0, -1, "wmma::store_matrix_sync");
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) (l == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i]) = f.x[i * N + j];
}
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
  TC out[M * N];
  float fa[M * K], fb[K * N];  // each element converted once, not once per product (fp16 conversion is not free)
  for (int i = 0; i < M * K; ++i) fa[i] = emu_to_float(a.x[i]);
  for (int i = 0; i < K * N; ++i) fb[i] = emu_to_float(b.x[i]);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = emu_to_float(c.x[i * N + j]);
      for (int k = 0; k < K; ++k) s += fa[i * K + k] * fb[k * N + j];
      out[i * N + j] = TC(s);
    }
  for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
