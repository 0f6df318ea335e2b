// Row gather on the GPU: selective propagation (issue 7, keep:<1) moves the kept tokens' residual rows together and
// copies one layer's K/V rows at the kept positions out of the bf16 cache into a compact buffer, so the prefill
// attention and importance kernels (which read keys 0..m-1 of a cache, causal by slot) see the m kept tokens in
// position order: slot a holds position pos[a], pos ascending, so causal by slot is causal by position. CPU twin:
// gather_rows_cpu (kernels/gather_cpu.h).
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// For every block b < blocks and a < m: dst[b * dst_block + a * width .. +width) =
// src[b * src_block + idx[a] * width .. +width). idx: (m) device row indices; dst must not overlap src.
void gather_rows_cuda(float* dst, const float* src, const int* idx, int m, int width, int blocks, int64_t src_block,
                      int64_t dst_block, cudaStream_t st);
void gather_rows_cuda(bf16* dst, const bf16* src, const int* idx, int m, int width, int blocks, int64_t src_block,
                      int64_t dst_block, cudaStream_t st);
void gather_rows_cuda(__half* dst, const __half* src, const int* idx, int m, int width, int blocks,
                      int64_t src_block, int64_t dst_block, cudaStream_t st);

}  // namespace llm
