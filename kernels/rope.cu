// RoPE + KV write: one block per token. Napkin math (Llama-3-8B decode): 24 KB of fp32 QKV in, 12 KB bf16 out,
// 48 rotations x 64 pairs of sincosf: launch-bound (~3 us). The angle is the fp32 product pos * inv_freq, then
// accurate sincosf, exactly what rope_cpu does, so only the bf16 rounding of the output differs.
#include "kernels/rope_cuda.h"

namespace llm {

namespace {
template <class T>
__global__ void rope_kv_kernel(T* q_out, T* k_cache, T* v_cache, const float* qkv, const int* pos,
                               int n_heads, int n_kv_heads, int head_dim, int capacity, const float* inv_freq,
                               bool interleaved) {
  const int i = blockIdx.x;
  const int p = pos[i];
  const int half = head_dim / 2;
  const int qd = n_heads * head_dim, kvd = n_kv_heads * head_dim;
  const float* row = qkv + static_cast<size_t>(i) * (qd + 2 * kvd);
  // rotations: (n_heads + n_kv_heads) heads x half pairs
  const int n_rot = (n_heads + n_kv_heads) * half;
  for (int t = threadIdx.x; t < n_rot; t += blockDim.x) {
    const int hh = t / half, j = t - hh * half;
    const int a_idx = interleaved ? 2 * j : j;
    const int b_idx = interleaved ? 2 * j + 1 : j + half;
    const float ang = static_cast<float>(p) * inv_freq[j];
    float sn, cs;
    sincosf(ang, &sn, &cs);
    const float* src = row + static_cast<size_t>(hh) * head_dim;  // q heads then k heads, contiguous
    const float a = src[a_idx], b = src[b_idx];
    const float ra = a * cs - b * sn, rb = a * sn + b * cs;
    T* dst;
    if (hh < n_heads) {
      dst = q_out + (static_cast<size_t>(i) * n_heads + hh) * head_dim;
    } else {
      const int g = hh - n_heads;
      dst = k_cache + (static_cast<size_t>(g) * capacity + p) * head_dim;
    }
    dst[a_idx] = from_f32<T>(ra);
    dst[b_idx] = from_f32<T>(rb);
  }
  const float* v = row + qd + kvd;
  for (int t = threadIdx.x; t < kvd; t += blockDim.x) {
    const int g = t / head_dim, d = t - g * head_dim;
    v_cache[(static_cast<size_t>(g) * capacity + p) * head_dim + d] = from_f32<T>(v[t]);
  }
}
}  // namespace

template <class T>
void rope_kv_write_cuda(T* q_out, T* k_cache, T* v_cache, const float* qkv, const int* pos, int n,
                        int n_heads, int n_kv_heads, int head_dim, int capacity, const float* inv_freq,
                        RopeLayout layout, cudaStream_t st) {
  if (head_dim % 2 != 0) fail("rope_kv_write_cuda: head_dim ", head_dim, " must be even");
  if (n <= 0) return;
  rope_kv_kernel<T><<<n, 256, 0, st>>>(q_out, k_cache, v_cache, qkv, pos, n_heads, n_kv_heads, head_dim, capacity,
                                    inv_freq, layout == RopeLayout::interleaved);
  CUDA_CHECK_LAUNCH();
}
template void rope_kv_write_cuda<bf16>(bf16*, bf16*, bf16*, const float*, const int*, int, int, int, int, int,
                                       const float*, RopeLayout, cudaStream_t);
template void rope_kv_write_cuda<f16>(f16*, f16*, f16*, const float*, const int*, int, int, int, int, int,
                                      const float*, RopeLayout, cudaStream_t);

}  // namespace llm
