// Dequantisation of GGML block types to f32 (CPU reference, also used at load for the GPU path to bf16).
// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Any other type throws
// llm::Error naming it and listing the supported ones.
#pragma once
#include <cstdint>

#include "loader/tensor.h"

namespace llm {

// n elements (a multiple of the type's block size) from src (raw blocks) to dst.
void dequantize_row(GGMLType type, const void* src, float* dst, int64_t n);
// Same, rounding to bf16 (round-to-nearest-even), for uploading to the GPU.
void dequantize_row_bf16(GGMLType type, const void* src, uint16_t* dst, int64_t n);
// Whole tensor to f32; dst has t.numel() elements.
void tensor_to_f32(const TensorView& t, float* dst);

float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays NaN
// The same on a float's bits, in 32-bit integer arithmetic: constexpr, so the CUDA kernels call it too
// (--expt-relaxed-constexpr); kernels/quant.cu uses it instead of __float2bfloat16_rn (see there). Branch-free,
// so that loops over it vectorise.
constexpr uint16_t bf16_from_bits(uint32_t x) {
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;  // round to nearest, ties to even
  const uint32_t quiet_nan = (x >> 16) | 0x40u;                      // NaN stays NaN (rounding could make it inf)
  return uint16_t((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

}  // namespace llm
