// Attention on the GPU over the 16-bit KV cache (T = bf16 or f16, the templates instantiated for both) laid out like
// the CPU one: per layer (n_kv_heads, capacity, head_dim), token t at slot t. head_dim 64 or 128 (every LLaMA we
// support); fp32 softmax and accumulation. CPU twin: attention_cpu (causal, GQA: head h reads KV head h / (n_heads /
// n_kv_heads)).
#pragma once
#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// Prefill: flash-attention-2 tiling (64 queries x 64 keys per step, WMMA T tensor cores, online softmax).
//   q: (n_q, n_heads, head_dim) T; k, v: one layer's cache; out: (n_q, n_heads, head_dim) T.
// Query i sits at position n_kv - n_q + i and sees keys 0..n_kv - n_q + i.
template <class T>
void attention_prefill_cuda(T* out, const T* q, const T* k, const T* v, int n_q, int n_kv, int n_heads,
                            int n_kv_heads, int head_dim, int capacity, cudaStream_t st);

// Decode (one query token): split-K flash decoding. Grid (n_kv_heads, splits): each block reads one chunk of ONE
// KV head's keys/values once for all the query heads of its group, writes an unnormalised partial output with its
// max and sum; a combine kernel merges the splits. The number of valid keys is read on the device
// (n_kv = *pos + 1, pos = the new token's position), so one captured CUDA graph serves every step.
//   q: (n_heads, head_dim) T; out: (n_heads, head_dim) T; workspace: attention_decode_workspace_floats().
int attention_decode_splits(int n_kv_heads, int capacity, int sm_count);
size_t attention_decode_workspace_floats(int n_heads, int head_dim, int splits);
template <class T>
void attention_decode_cuda(T* out, const T* q, const T* k, const T* v, const int* pos, int n_heads,
                           int n_kv_heads, int head_dim, int capacity, int splits, float* workspace, cudaStream_t st);

}  // namespace llm
