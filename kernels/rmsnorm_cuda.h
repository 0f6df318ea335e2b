// RMSNorm on the GPU, plain and fused with the residual add that precedes every norm of the layer loop.
// The residual stream x stays fp32; the normed output is 16-bit (bf16 or f16) because it only feeds a GEMM/GEMV.
// CPU twin: rmsnorm_cpu (+ add_cpu for the fused form).
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

// out[i, :] = T(x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w).   x: (n, dim) fp32; w: (dim) fp32; out: (n, dim).
template <class T>  // T: bf16 or f16 (instantiated in rmsnorm.cu)
void rmsnorm_cuda(T* out, const float* x, const float* w, int n, int dim, float eps, cudaStream_t st);
// x[i, :] += y[i, :] (in place), then out = rmsnorm(x) as above. One pass over y, x read twice (L1/L2 hit).
template <class T>
void add_rmsnorm_cuda(T* out, float* x, const float* y, const float* w, int n, int dim, float eps,
                      cudaStream_t st);

}  // namespace llm
