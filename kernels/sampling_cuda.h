// Token selection on the GPU: greedy argmax (what the CUDA-graph decode loop uses) and temperature / top-k / top-p
// sampling over a CUB radix sort. The session samples on the host with engine/sampler.cpp (same results, one
// code path for every device); these kernels serve the device-resident loop of `llm bench` and later batching.
// CPU twins: argmax_cpu; sort + softmax + sample_probs_cpu for the sampler.
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// out[0] = index of the largest of x[0..n) (the first one on ties). One block.
void argmax_cuda(int* out, const float* x, int n, cudaStream_t st);

// Scratch for sample_cuda over n logits: sort keys/values and CUB's temporary storage.
struct SampleScratch {
  int n = 0;
  DeviceBuffer keys_in, keys_out, ids_in, ids_out, temp;
};
SampleScratch sample_scratch_create(int n);

// Sample from logits x (n) with coin u in [0, 1): p_i ~ exp(x_i / temperature) over the top_k largest
// (top_k <= 0: all), then the smallest prefix (by descending p) whose mass reaches top_p of that (top_p >= 1: all),
// then the first i of that prefix with cumsum(p)[i] > u * sum(prefix). Writes the token id to out[0].
// temperature must be > 0 (use argmax_cuda for greedy).
void sample_cuda(int* out, const float* x, int n, float temperature, int top_k, float top_p, float u,
                 SampleScratch& s, cudaStream_t st);

}  // namespace llm
