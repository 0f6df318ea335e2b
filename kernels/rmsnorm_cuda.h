// RMSNorm on the GPU, plain and fused with the residual add that precedes every norm of the layer loop.
// The residual stream x stays fp32; the normed output is bf16 because it only feeds a bf16 GEMM/GEMV.
// CPU twin: rmsnorm_cpu (+ add_cpu for the fused form).
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// out[i, :] = bf16(x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w).   x: (n, dim) fp32; w: (dim) fp32; out: (n, dim).
void rmsnorm_cuda(bf16* out, const float* x, const float* w, int n, int dim, float eps, cudaStream_t st);
// x[i, :] += y[i, :] (in place), then out = rmsnorm(x) as above. One pass over y, x read twice (L1/L2 hit).
void add_rmsnorm_cuda(bf16* out, float* x, const float* y, const float* w, int n, int dim, float eps,
                      cudaStream_t st);

}  // namespace llm
