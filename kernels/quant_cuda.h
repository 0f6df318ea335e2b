// Group-wise asymmetric quantisation of KV rows on the GPU (issue 7). The row format is kernels/quant_cpu.h's,
// byte for byte, so a cache packed on one side reads on the other:
//   bits 2, 4, 8: head_dim/group groups, each [fp16 scale][fp16 min][group*bits/8 bytes of codes], codes packed
//                 little-end first (4 bits: c0 | c1 << 4; 2 bits: c0 | c1 << 2 | c2 << 4 | c3 << 6).
//   bits 16:      the full-precision class, `row16` bytes a value: 4 = fp32 (the CPU cache's choice, so a CPU
//                 cache uploads as is) or 2 = bf16 (what a cache built on the GPU keeps; half the bytes).
// CPU twins: quantize_row_cpu / dequantize_row_cpu. The codes are computed with the CPU's arithmetic (min and max
// in the same order, scale and min rounded to fp16 first, x - min times 1/scale, round to nearest even, clamp),
// so an fp32 input gives the same bytes on both sides; tests/cuda/test_quant_cuda.cu checks that.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// Bytes of one row of n values at `bits` (2, 4, 8, 16); row16 = 4 (fp32) or 2 (bf16) for the 16-bit class.
__host__ __device__ inline size_t quant_row_bytes_cuda(int n, int bits, int group, int row16) {
  return bits == 16 ? size_t(n) * row16 : size_t(n / group) * (4 + size_t(group) * bits / 8);
}

// ---- device-side reading of one packed row (shared by the attention kernels) ----
// Rows start at any byte (a 2-bit row with group 4 is 5 bytes a group), so multi-byte fields are assembled from
// single bytes: no misaligned loads whatever the layout.
__device__ __forceinline__ uint32_t quant_load_u16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
__device__ __forceinline__ float quant_load_fp16(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(quant_load_u16(p))));
}
__device__ __forceinline__ float quant_load_f32(const uint8_t* p) {
  return __uint_as_float(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
}
// Values i0 .. i0 + E - 1 of a row (all inside one scale group: group % E == 0 and i0 % E == 0) into v.
// Same formula as dequantize_row_cpu: min + scale * code.
template <int E>
__device__ __forceinline__ void quant_load_values(float* v, const uint8_t* row, int i0, int bits, int group, int row16) {
  if (bits == 16) {
#pragma unroll
    for (int e = 0; e < E; ++e)
      v[e] = row16 == 4 ? quant_load_f32(row + size_t(i0 + e) * 4)
                        : __uint_as_float(quant_load_u16(row + size_t(i0 + e) * 2) << 16);  // bf16 -> f32: exact
    return;
  }
  const int gi = i0 / group, in = i0 - gi * group;  // group index, index of i0 inside its group
  const uint8_t* g = row + size_t(gi) * (4 + group * bits / 8);
  const float sc = quant_load_fp16(g), mn = quant_load_fp16(g + 2);
  const int per_byte = 8 / bits, mask = (1 << bits) - 1;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int i = in + e;
    const int code = (g[4 + i / per_byte] >> ((i % per_byte) * bits)) & mask;
    v[e] = mn + sc * static_cast<float>(code);
  }
}

// Checks n / bits / group / row16 (group a positive multiple of 4 dividing n; row16 2 or 4); throws llm::Error.
void quant_check_cuda(const char* who, int n, int group, int row16);

// Quantise n_rows rows of n values. Row r reads x + src_row[r] * x_stride (src_row == nullptr: row r) and
// writes quant_row_bytes_cuda(n, bits[r], group, row16) bytes at dst + dst_off[r]. Rows may have different
// widths (one launch for a whole mixed-precision layer). All pointers are device pointers.
//   A bf16 input is widened to fp32 first (exact), then quantised as the CPU would quantise those floats.
struct QuantRowsArgs {
  uint8_t* dst = nullptr;
  const uint64_t* dst_off = nullptr;  // (n_rows)
  const uint8_t* bits = nullptr;      // (n_rows): 2, 4, 8 or 16
  const int* src_row = nullptr;       // (n_rows) or nullptr
  int64_t x_stride = 0;               // elements between consecutive source rows
  int n_rows = 0, n = 0, group = 32, row16 = 2;
};
void quantize_rows_cuda(const QuantRowsArgs& a, const float* x, cudaStream_t st);
void quantize_rows_cuda(const QuantRowsArgs& a, const bf16* x, cudaStream_t st);

// Dequantise (tests only: the attention kernels never expand a cache): row r of src at src_off[r], width bits[r],
// into out + r * n (fp32).
void dequantize_rows_cuda(float* out, const uint8_t* src, const uint64_t* src_off, const uint8_t* bits, int n_rows,
                          int n, int group, int row16, cudaStream_t st);

// `quant:...,hadamard` (engine/forward_cuda.cu): rotate bf16 rows of hd values (64, 128 or 256) in place by the
// normalised Walsh-Hadamard transform, computed in fp32 and rounded once (CPU twin: hadamard_rotate_cpu on the
// widened row). Rows (i, b), i < n, b < blocks, at x + b * block_stride + (pos ? pos[i] : i) * row_stride
// (elements; pos a device array, so a captured decode graph reads the step's position).
void hadamard_rows_cuda(bf16* x, const int* pos, int n, int blocks, int64_t block_stride, int64_t row_stride, int hd,
                        cudaStream_t st);

}  // namespace llm
