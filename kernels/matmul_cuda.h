// Matrix products on the GPU, bf16 weights (rows = out_features, cols = in_features, row-major as in the file),
// fp32 accumulation and fp32 output. Decode (one token) uses the hand-written GEMV; prefill (a block of tokens)
// goes through cuBLASLt. `llm bench --device cuda` times both at n = 1 (gemv vs cublaslt lines).
// CPU twin: matmul_cpu over the same weights.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <vector>

#include "kernels/common.cuh"

namespace llm {

// y (rows) fp32 = W (rows, cols) bf16 . x (cols) bf16.  cols must be a multiple of 8; W and x 16-byte aligned.
void gemv_bf16_cuda(float* y, const bf16* w, const bf16* x, int rows, int cols, cudaStream_t st);

// A cuBLASLt handle, its workspace and the algorithms chosen so far; one per session (not shared across threads).
struct CublasLt {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;  // 32 MiB, what cuBLAS recommends for Hopper
  // the heuristic's pick per shape: asking costs tens of microseconds, and a prefill makes 4 GEMMs per layer
  struct Algo {
    int n, rows, cols;
    cublasLtMatmulAlgo_t algo;
  };
  std::vector<Algo> algos;
  CublasLt();
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;
};

// out (n, rows) fp32 = x (n, cols) bf16 . W^T, W (rows, cols) bf16; fp32 accumulation (CUBLAS_COMPUTE_32F).
void gemm_bf16_cuda(CublasLt& lt, float* out, const bf16* x, const bf16* w, int n, int rows, int cols,
                    cudaStream_t st);

}  // namespace llm
