// Element-wise GPU ops: SwiGLU, the residual add, fp32 <-> 16-bit (bf16 or f16) conversion, and the seeded random fills
// that `llm bench --synthetic` uses to make weights and a filled KV cache on the device. CPU twins: swiglu_cpu,
// add_cpu.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// The templates take T = bf16 or f16 (instantiated in elementwise.cu); the *_bf16_* names are the bf16 forms.
// gu: (n, 2*ffn) fp32, each row [gate | up] (the fused gate/up projection); out: (n, ffn) T = silu(gate) * up.
template <class T>
void swiglu_cuda(T* out, const float* gu, int n, int ffn, cudaStream_t st);
// x[i] += y[i].  (count)
void add_cuda(float* x, const float* y, int64_t count, cudaStream_t st);
template <class T>
void f32_to_elem_cuda(T* out, const float* x, int64_t count, cudaStream_t st);
template <class T>
void elem_to_f32_cuda(float* out, const T* x, int64_t count, cudaStream_t st);
inline void f32_to_bf16_cuda(bf16* out, const float* x, int64_t count, cudaStream_t st) {
  f32_to_elem_cuda(out, x, count, st);
}
inline void bf16_to_f32_cuda(float* out, const bf16* x, int64_t count, cudaStream_t st) {
  elem_to_f32_cuda(out, x, count, st);
}
// out[i] = uniform in [-scale, scale) from a counter-based hash of (seed, i), rounded to T: reproducible, no state.
template <class T>
void fill_random_cuda(T* out, int64_t count, uint64_t seed, float scale, cudaStream_t st);
inline void fill_random_bf16_cuda(bf16* out, int64_t count, uint64_t seed, float scale, cudaStream_t st) {
  fill_random_cuda(out, count, seed, scale, st);
}
void fill_const_f32_cuda(float* out, int64_t count, float value, cudaStream_t st);

}  // namespace llm
