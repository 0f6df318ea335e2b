// The importance accumulators of prefill compression (issue 7) on the GPU, without forming the m x m attention
// matrix. CPU twin: attention_importance_cpu (kernels/quant_cpu.h), whose accumulators are, for KV head g, key j:
//   cum[g, j] = sum over queries i >= j and the query heads h of group g of p_{i,h}(j)
//   win[g, j] = the same sum over the last w queries only (i >= m - min(w, m))
// with p_{i,h}(j) = softmax over keys 0..i of q_{i,h} . k_j / sqrt(head_dim) (causal, the layer's m tokens).
// The attention OUTPUT of that prefill comes from attention_prefill_cuda (kernels/attention_cuda.h) on the same
// q and cache; this computes the two accumulators only.
//
// Two passes over 32 x 32 tiles, fp32 scores from bf16 inputs (scalar FMAs, no tensor cores: exact enough to rank
// tokens and simple to check):
//   1. grid (m/32 query tiles, n_heads): each query row's max M_i and 1 / sum_j exp(s_ij - M_i), online over the
//      key tiles up to the diagonal (flash attention's statistics) -> workspace (2, n_heads, m).
//   2. grid (m/32 key tiles, n_kv_heads): a block owns 32 keys of one KV head, loops over the group's heads and
//      the query tiles from the diagonal down, recomputes p = exp(s - M_i) / L_i and sums it per key in
//      registers; the four warps' partial column sums are added in a fixed order: no atomics, deterministic.
// Work: 2 x (m^2 / 2) x head_dim x n_heads multiply-adds per layer (twice the attention's QK^T).
#pragma once
#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

size_t attention_importance_workspace_floats(int m, int n_heads);
// q: (m, n_heads, head_dim) bf16 after RoPE; k: one layer's (n_kv_heads, capacity, head_dim) bf16 cache whose
// slots 0..m-1 hold the m computed tokens in order (after RoPE); cum, win: (n_kv_heads, m) fp32 (overwritten);
// w: the window (the CPU twin's w). head_dim 64 or 128.
void attention_importance_cuda(float* cum, float* win, const bf16* q, const bf16* k, int m, int n_heads,
                               int n_kv_heads, int head_dim, int capacity, int w, float* workspace, cudaStream_t st);

}  // namespace llm
