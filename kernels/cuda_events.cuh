// A pair of CUDA events for timing a stretch of device work: record `a`, enqueue the work, record `b`, then ms()
// waits for `b` and returns the milliseconds between the two. Used by the benchmarks (engine/bench_cuda.cu,
// tools/bench_*_cuda.cu).
#pragma once
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace llm {

struct CudaEvents {
  cudaEvent_t a = nullptr, b = nullptr;
  CudaEvents() {
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
  }
  ~CudaEvents() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  CudaEvents(const CudaEvents&) = delete;
  CudaEvents& operator=(const CudaEvents&) = delete;
  float ms() {
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    return t;
  }
};

}  // namespace llm
