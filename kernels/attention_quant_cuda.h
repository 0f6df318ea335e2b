// Decode attention on the GPU straight from the mixed-precision KV cache of issue 7 (layout: engine/kv_prefill.h;
// row format: kernels/quant_cpu.h / kernels/quant_cuda.h). CPU twin: attention_quant_cpu.
//
// Split-K flash decoding, GQA-aware: grid (n_kv_heads, splits, n_q); a block streams one chunk of ONE KV head's
// packed entries once for all the query heads of its group. A warp owns one entry at a time: it reads the
// entry's width and offset, and each lane dequantises its head_dim/32 values of the key row, then of the value
// row (which follows the key row), in registers; nothing is expanded into a full-size buffer. Per-warp online
// softmax in fp32, merged over the block's warps in shared memory, then over the splits by a combine kernel.
//
// The keys were cached after RoPE, so the kernel needs no positions: query i sees entries 0 .. n_kv - n_q + i
// (the cache is in position order and the last n_q entries are the queries' own tokens), as in the CPU twin.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

struct QuantDecodeArgs {
  const bf16* q = nullptr;         // (n_q, n_heads, head_dim), RoPE applied
  const uint8_t* data = nullptr;   // the layer's packed entries, every KV head
  const uint64_t* off = nullptr;   // (n_kv_heads, stride): byte offset in data of entry e of KV head g
                                   // (its key row; the value row follows it, same width)
  const uint8_t* bits = nullptr;   // (n_kv_heads, stride): width of entry e of KV head g (2, 4, 8, 16)
  const int* n_kv = nullptr;       // device: number of entries (read on the device, so a graph can replay it)
  int stride = 0;                  // >= every n_kv used (the capacity of off/bits per head)
  int n_q = 1, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int group = 32;                  // values per scale/min group
  int row16 = 2;                   // bytes a value of the 16-bit class: 2 (bf16) or 4 (fp32, a CPU-built cache)
};

// Splits for a cache of up to max_entries entries per head: enough blocks to fill the device (8 per SM), never
// more than one per 64 entries.
int attention_quant_decode_splits(int n_kv_heads, int max_entries, int sm_count);
size_t attention_quant_workspace_floats(int n_q, int n_heads, int head_dim, int splits);
// out: (n_q, n_heads, head_dim) bf16. head_dim 64 or 128, at most 8 query heads per KV head.
void attention_quant_decode_cuda(bf16* out, const QuantDecodeArgs& a, int splits, float* workspace, cudaStream_t st);

}  // namespace llm
