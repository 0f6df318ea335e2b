// RoPE fused with the KV-cache write: the QKV projection's fp32 output goes in, the rotated bf16 queries and the
// rotated keys / plain values land in their cache slots. Both pairings (RopeLayout) and llama3 scaling (through the
// inverse frequencies, computed on the host by rope_inv_freq_cpu so CPU and GPU share them bit for bit).
// CPU twin: rope_cpu on q and k, then the copy into the cache that forward_cpu does.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"
#include "loader/config.h"

namespace llm {

// qkv:      (n, (n_heads + 2*n_kv_heads) * head_dim) fp32, each row [q | k | v]
// pos:      (n) device positions; token i is rotated by pos[i] and written to cache slot pos[i] (< capacity)
// q_out:    (n, n_heads, head_dim) T (bf16 or f16)
// k_cache, v_cache: ONE layer's (n_kv_heads, capacity, head_dim) T
// inv_freq: (head_dim/2) fp32 device
template <class T>  // T: bf16 or f16 (instantiated in rope.cu)
void rope_kv_write_cuda(T* q_out, T* k_cache, T* v_cache, const float* qkv, const int* pos, int n,
                        int n_heads, int n_kv_heads, int head_dim, int capacity, const float* inv_freq,
                        RopeLayout layout, cudaStream_t st);

}  // namespace llm
