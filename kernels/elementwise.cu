// Element-wise kernels: grid-stride loops. SwiGLU napkin math (Llama-3-8B decode): 112 KB in, 28 KB out, ~3 us.
#include "kernels/elementwise_cuda.h"

namespace llm {

namespace {
int grid_for(int64_t count, int threads) {
  int64_t b = (count + threads - 1) / threads;
  return static_cast<int>(b < 65536 ? (b < 1 ? 1 : b) : 65536);
}

template <class T>
__global__ void swiglu_kernel(T* out, const float* gu, int n, int ffn) {
  const int64_t total = static_cast<int64_t>(n) * ffn;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / ffn, j = t - i * ffn;
    const float g = gu[i * 2 * ffn + j], u = gu[i * 2 * ffn + ffn + j];
    out[t] = from_f32<T>(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t count) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count; t += int64_t(gridDim.x) * blockDim.x)
    x[t] += y[t];
}

template <class T>
__global__ void f32_to_elem_kernel(T* out, const float* x, int64_t count) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = from_f32<T>(x[t]);
}

template <class T>
__global__ void elem_to_f32_kernel(float* out, const T* x, int64_t count) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = to_f32(x[t]);
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class T>
__global__ void fill_random_kernel(T* out, int64_t count, uint64_t seed, float scale) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count; t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(t));
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[t] = from_f32<T>((2.0f * u - 1.0f) * scale);
  }
}

__global__ void fill_const_f32_kernel(float* out, int64_t count, float value) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < count; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = value;
}
}  // namespace

template <class T>
void swiglu_cuda(T* out, const float* gu, int n, int ffn, cudaStream_t st) {
  if (n <= 0) return;
  swiglu_kernel<T><<<grid_for(int64_t(n) * ffn, 256), 256, 0, st>>>(out, gu, n, ffn);
  CUDA_CHECK_LAUNCH();
}
void add_cuda(float* x, const float* y, int64_t count, cudaStream_t st) {
  if (count <= 0) return;
  add_kernel<<<grid_for(count, 256), 256, 0, st>>>(x, y, count);
  CUDA_CHECK_LAUNCH();
}
template <class T>
void f32_to_elem_cuda(T* out, const float* x, int64_t count, cudaStream_t st) {
  if (count <= 0) return;
  f32_to_elem_kernel<T><<<grid_for(count, 256), 256, 0, st>>>(out, x, count);
  CUDA_CHECK_LAUNCH();
}
template <class T>
void elem_to_f32_cuda(float* out, const T* x, int64_t count, cudaStream_t st) {
  if (count <= 0) return;
  elem_to_f32_kernel<T><<<grid_for(count, 256), 256, 0, st>>>(out, x, count);
  CUDA_CHECK_LAUNCH();
}
template <class T>
void fill_random_cuda(T* out, int64_t count, uint64_t seed, float scale, cudaStream_t st) {
  if (count <= 0) return;
  fill_random_kernel<T><<<grid_for(count, 256), 256, 0, st>>>(out, count, seed, scale);
  CUDA_CHECK_LAUNCH();
}
void fill_const_f32_cuda(float* out, int64_t count, float value, cudaStream_t st) {
  if (count <= 0) return;
  fill_const_f32_kernel<<<grid_for(count, 256), 256, 0, st>>>(out, count, value);
  CUDA_CHECK_LAUNCH();
}

#define LLM_ELEMENTWISE_INST(T)                                                                 \
  template void swiglu_cuda<T>(T*, const float*, int, int, cudaStream_t);                       \
  template void f32_to_elem_cuda<T>(T*, const float*, int64_t, cudaStream_t);                   \
  template void elem_to_f32_cuda<T>(float*, const T*, int64_t, cudaStream_t);                   \
  template void fill_random_cuda<T>(T*, int64_t, uint64_t, float, cudaStream_t);
LLM_ELEMENTWISE_INST(bf16)
LLM_ELEMENTWISE_INST(f16)
#undef LLM_ELEMENTWISE_INST

}  // namespace llm
