// Shared CUDA helpers: error checks that throw llm::Error, warp/block reductions, bf16 conversions, a move-only
// device buffer. Included by kernels/*.cu, engine/*.cu and tests/cuda/*.cu only (never by host .cpp files).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "loader/error.h"

namespace llm {

using bf16 = __nv_bfloat16;
using f16 = __half;  // the second element type of the full-cache path (--dtype f16); fp32 accumulation either way

// CUDA_CHECK(cudaMalloc(...)): throws llm::Error naming the call, the file:line and the CUDA error.
#define CUDA_CHECK(expr)                                                                                     \
  do {                                                                                                       \
    cudaError_t err_ = (expr);                                                                               \
    if (err_ != cudaSuccess)                                                                                 \
      ::llm::fail("CUDA error in ", #expr, " at ", __FILE__, ":", __LINE__, ": ", cudaGetErrorString(err_), \
                  " (check the GPU with nvidia-smi; run under compute-sanitizer to locate the fault)");     \
  } while (0)
// After a kernel launch: catches bad launch configurations immediately (asynchronous faults surface later).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// ---- reductions --------------------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` is 32 floats of shared memory; the function syncs before returning, so it can be reused at once.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nw ? scratch[lane] : 0.0f;
  return warp_sum(t);
}

// ---- conversions -----------------------------------------------------------------------------------------
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(float x) { return x; }
// 8 bf16 packed in a uint4 (one 16-byte load) -> 8 floats.
__device__ __forceinline__ void bf16x8_to_f32(const uint4& u, float* f) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(p[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// The full-cache kernels are templates on the 16-bit element type T (bf16 or f16), instantiated for both: every
// load goes through to_f32 / elem8_to_f32, every store through from_f32<T> (round to nearest even).
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }
// Two rounded elements as one 4-byte store (p 4-byte aligned).
template <class T>
__device__ __forceinline__ void store2(T* p, float a, float b) {
  if constexpr (std::is_same_v<T, f16>)
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
  else
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
// 8 fp16 packed in a uint4 -> 8 floats.
__device__ __forceinline__ void f16x8_to_f32(const uint4& u, float* f) {
  const __half2* p = reinterpret_cast<const __half2*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __half22float2(p[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
// elem8_to_f32<T>(u, f): 8 elements of type T packed in a uint4 -> 8 floats.
template <class T>
__device__ __forceinline__ void elem8_to_f32(const uint4& u, float* f) {
  if constexpr (std::is_same_v<T, f16>)
    f16x8_to_f32(u, f);
  else
    bf16x8_to_f32(u, f);
}

// Host-side names of the element types (messages, bench output).
template <class T>
constexpr const char* elem_name();
template <>
constexpr const char* elem_name<bf16>() { return "bf16"; }
template <>
constexpr const char* elem_name<f16>() { return "f16"; }

// ---- device memory ---------------------------------------------------------------------------------------
// A move-only cudaMalloc'd block; freed in the destructor. Size 0 holds no memory.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n) {
      cudaError_t e = cudaMalloc(&ptr, n);
      if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        fail("cudaMalloc of ", n / 1048576.0, " MiB failed (", cudaGetErrorString(e), "; ", free_b / 1048576.0,
             " MiB free of ", total_b / 1048576.0, "): use a smaller context (-c) or a smaller model");
      }
    }
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(std::exchange(o.ptr, nullptr)), bytes(std::exchange(o.bytes, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr) cudaFree(ptr);
      ptr = std::exchange(o.ptr, nullptr);
      bytes = std::exchange(o.bytes, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// Number of CUDA devices; 0 when there is none or no driver (never throws; clears the error state).
inline int cuda_devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace llm
