// Embedding gather on the GPU. The table is bf16 on the device (GGUF quantised tables are dequantised to bf16
// at load, engine/forward_cuda.cu), so one kernel serves every file type. CPU twin: embedding_cpu.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// out[i, :] = table[tokens[i], :] as fp32.   tokens: (n) device ids; table: (vocab, dim) bf16; out: (n, dim).
// dim must be a multiple of 8 (16-byte loads). An id outside [0, vocab) gives a row of zeros: the host checks
// ids before they reach the device (the kernel cannot throw).
template <class T>  // bf16 or f16 (instantiated in embedding.cu)
void embedding_cuda(float* out, const int* tokens, int n, const T* table, int vocab, int dim, cudaStream_t st);

}  // namespace llm
