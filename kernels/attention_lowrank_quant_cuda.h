// Attention on the GPU straight from the unified cache of issue 7 (svd combined with quant/keep/evict): each entry
// holds rank-space rows, c_k (r_k values, before RoPE) then c_v (the entry's value rank), both at the entry's own
// width (2, 4, 8 or 16 bits) in the rank-row format of kernels/quant_cpu.h. Cache layout: engine/kv_prefill.h.
// CPU twin: attention_lowrank_quant_cpu (kernels/quant_cpu.h), the same semantics:
//   - query i (of n_q) sees entries 0 .. n_kv - n_q + i (entry order, whatever the positions: eviction leaves gaps)
//   - key of entry e = U_K[:, :r_k] c_k, RoPE'd at pos[e] (the entry's own position, not its index)
//   - z (r_vmax wide per head) = sum_e p_e pad(c_v,e), c_v of entry e read at vrank[g][e] values, zero beyond
//
// Split-K flash decoding, GQA-aware (the block program of kernels/attention_lowrank.cu): a block = (KV head g, a
// chunk of queries, one split's range of entries). It walks its entries in tiles of 32: each thread dequantises
// single values of the tile's packed c_k and c_v rows (per-entry offset and width) into shared memory, the keys
// are rebuilt with the U_K rows held in shared memory and RoPE'd at their positions, then scored for every query
// head of the group and every query of the chunk (each KV head's entries are read once for its query group),
// online softmax, z accumulated in rank space. Nothing is dequantised into a full-size buffer. A combine kernel
// merges the splits and normalises.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"
#include "loader/config.h"

namespace llm {

// Device pointers. The CPU cache keeps one byte vector per KV head (data[g]); here the layer's entries of every
// KV head lie in ONE buffer and off[] is relative to it (a CPU cache uploads with off[g][e] + the head's base).
struct LowRankQuantDecodeArgs {
  const float* q = nullptr;          // (n_q, n_heads, head_dim) fp32, RoPE applied
  const uint8_t* data = nullptr;     // the layer's packed entries, every KV head
  const uint64_t* off = nullptr;     // (n_kv_heads, stride): byte offset in data of entry e of KV head g (c_k row;
                                     // the c_v row follows it, same width)
  const uint8_t* bits = nullptr;     // (n_kv_heads, stride): width of entry e of KV head g (2, 4, 8, 16)
  const uint16_t* vrank = nullptr;   // (n_kv_heads, stride): value rank of entry e of KV head g, 1..r_vmax
  const int32_t* pos = nullptr;      // (stride): position of entry e (RoPE of its rebuilt key), every KV head
  const float* uk = nullptr;         // (n_kv_heads, r_k, head_dim) fp32: row j = basis vector j of U_K
  const float* inv_freq = nullptr;   // (head_dim/2) fp32 (rope_inv_freq_cpu's output)
  const int* n_kv = nullptr;         // device: number of entries (read on the device, so a graph can replay it);
                                     // n_q <= *n_kv <= stride
  int stride = 0;                    // capacity of off/bits/vrank per KV head (and of pos)
  int n_q = 1, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int r_k = 0, r_vmax = 0;
  int group = 32;                    // the rank-row group (quant_rank_row_bytes: <= 0 or >= n: one group a row)
  int row16 = 4;                     // bytes a value of the 16-bit class: 4 (fp32, the CPU cache) or 2 (bf16)
  RopeLayout rope_layout = RopeLayout::half_split;
};

// Splits for a cache of up to `capacity` entries per KV head: ~4 blocks per SM, never more than one per 32-entry
// tile. Workspace: attention_lowrank_quant_workspace_floats(n_q, n_heads, r_vmax, splits) floats.
int attention_lowrank_quant_splits(int n_kv_heads, int capacity, int sm_count);
size_t attention_lowrank_quant_workspace_floats(int n_q, int n_heads, int r_vmax, int splits);

// z: (n_q, n_heads, r_vmax) fp32 device. Any even head_dim up to 256, 1 <= r_k, r_vmax <= head_dim, any GQA
// group that fits the shared memory (attention_lowrank_quant_smem_bytes). Throws llm::Error on bad arguments
// (checked before any CUDA call).
void attention_lowrank_quant_cuda(float* z, const LowRankQuantDecodeArgs& a, int splits, float* workspace,
                                  cudaStream_t st);

// Dynamic shared memory one block needs (bytes).
size_t attention_lowrank_quant_smem_bytes(int group_heads, int q_per_block, int head_dim, int r_k, int r_vmax);

}  // namespace llm
