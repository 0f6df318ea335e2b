// Matrix products on the GPU, 16-bit weights and inputs (bf16 or f16: the template parameter T, instantiated for both
// in matmul.cu; the *_bf16_* names are the bf16 forms; rows = out_features, cols = in_features, row-major as in the
// file), fp32 accumulation and fp32 output. Decode (one token) uses the hand-written GEMV; prefill (a block of tokens)
// goes through cuBLASLt. `llm bench --device cuda` times both at n = 1 (gemv vs cublaslt lines). CPU twin: matmul_cpu
// over the same weights.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <vector>

#include "kernels/common.cuh"

namespace llm {

// y (rows) fp32 = W (rows, cols) T . x (cols) T.  cols must be a multiple of 8; W and x 16-byte aligned.
template <class T>
void gemv_cuda(float* y, const T* w, const T* x, int rows, int cols, cudaStream_t st);
inline void gemv_bf16_cuda(float* y, const bf16* w, const bf16* x, int rows, int cols, cudaStream_t st) {
  gemv_cuda(y, w, x, rows, cols, st);
}

// A cuBLASLt handle, its workspace and the algorithms chosen so far; one per session (not shared across threads).
struct CublasLt {
  cublasLtHandle_t handle = nullptr;
  DeviceBuffer workspace;  // 32 MiB, what cuBLAS recommends for Hopper
  // the heuristic's pick per shape: asking costs tens of microseconds, and a prefill makes 4 GEMMs per layer
  struct Algo {
    int n, rows, cols;
    cudaDataType_t type;  // CUDA_R_16BF or CUDA_R_16F
    cublasLtMatmulAlgo_t algo;
  };
  std::vector<Algo> algos;
  CublasLt();
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;
};

// out (n, rows) fp32 = x (n, cols) T . W^T, W (rows, cols) T; fp32 accumulation (CUBLAS_COMPUTE_32F); the
// layouts are CUDA_R_16BF or CUDA_R_16F.
template <class T>
void gemm_cuda(CublasLt& lt, float* out, const T* x, const T* w, int n, int rows, int cols, cudaStream_t st);
inline void gemm_bf16_cuda(CublasLt& lt, float* out, const bf16* x, const bf16* w, int n, int rows, int cols,
                           cudaStream_t st) {
  gemm_cuda(lt, out, x, w, n, rows, cols, st);
}

}  // namespace llm
