// Element-wise GPU ops: SwiGLU, the residual add, fp32 <-> bf16 conversion, and the seeded random fills that
// `llm bench --synthetic` uses to make weights and a filled KV cache on the device. CPU twins: swiglu_cpu, add_cpu.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// gu: (n, 2*ffn) fp32, each row [gate | up] (the fused gate/up projection); out: (n, ffn) bf16 = silu(gate) * up.
void swiglu_cuda(bf16* out, const float* gu, int n, int ffn, cudaStream_t st);
// x[i] += y[i].  (count)
void add_cuda(float* x, const float* y, int64_t count, cudaStream_t st);
void f32_to_bf16_cuda(bf16* out, const float* x, int64_t count, cudaStream_t st);
void bf16_to_f32_cuda(float* out, const bf16* x, int64_t count, cudaStream_t st);
// out[i] = uniform in [-scale, scale) from a counter-based hash of (seed, i): reproducible, no state.
void fill_random_bf16_cuda(bf16* out, int64_t count, uint64_t seed, float scale, cudaStream_t st);
void fill_const_f32_cuda(float* out, int64_t count, float value, cudaStream_t st);

}  // namespace llm
