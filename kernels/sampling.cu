// argmax: one 1024-thread block scans the vocabulary (128K floats = 512 KB, ~5 us).
// sample: cub::DeviceRadixSort (descending, stable) of (logit, id), then one block walks the sorted list with
// BlockScan prefix sums in chunks of 1024 to find the top-p cut and the sampled index. ~30 us at 128K vocab.
#include <cub/cub.cuh>

#include "kernels/sampling_cuda.h"

namespace llm {

namespace {
constexpr int kThreads = 1024;

__device__ __forceinline__ void better(float& v, int& i, float v2, int i2) {
  if (v2 > v || (v2 == v && i2 < i)) {
    v = v2;
    i = i2;
  }
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(int* out, const float* x, int n) {
  __shared__ float sv[32];
  __shared__ int si[32];
  float v = -INFINITY;
  int idx = n;  // larger than any real index: loses every tie
  for (int i = threadIdx.x; i < n; i += kThreads) better(v, idx, x[i], i);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    v = sv[lane];
    idx = si[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (lane == 0) out[0] = idx < n ? idx : 0;  // all -inf / NaN: token 0
  }
}

__global__ void iota_kernel(int* ids, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) ids[i] = i;
}

using BlockScan = cub::BlockScan<float, kThreads>;

// First index i < limit whose inclusive prefix sum of p(i) satisfies (strict ? > : >=) threshold; limit - 1 when
// none does (rounding at the end). p(i) = exp((sorted[i] - sorted[0]) / temperature).
__device__ int first_cumsum_at(const float* sorted, int limit, float inv_t, float threshold, bool strict,
                               BlockScan::TempStorage& ts, int* s_found, float* s_carry) {
  const float x0 = sorted[0];
  __syncthreads();  // a previous call's readers of *s_found are done
  if (threadIdx.x == 0) {
    *s_found = limit;
    *s_carry = 0.0f;
  }
  __syncthreads();
  for (int base = 0; base < limit; base += kThreads) {
    const int i = base + threadIdx.x;
    const float p = i < limit ? __expf((sorted[i] - x0) * inv_t) : 0.0f;
    float incl, total;
    BlockScan(ts).InclusiveSum(p, incl, total);
    const float c = *s_carry + incl;
    if (i < limit && (strict ? c > threshold : c >= threshold)) atomicMin(s_found, i);
    __syncthreads();  // s_found complete, s_carry read by all, scan storage free
    if (threadIdx.x == 0) *s_carry += total;
    const bool done = *s_found < limit;
    __syncthreads();
    if (done) break;
  }
  const int r = *s_found;
  return r < limit ? r : limit - 1;
}

__global__ void __launch_bounds__(kThreads) sample_sorted_kernel(int* out, const float* sorted, const int* ids, int n,
                                                                 float temperature, int top_k, float top_p, float u) {
  __shared__ BlockScan::TempStorage ts;
  __shared__ int s_found;
  __shared__ float s_carry;
  __shared__ float s_scratch[32];
  const float inv_t = 1.0f / temperature;
  const int m = top_k > 0 && top_k < n ? top_k : n;
  // total mass of the top-k set
  float part = 0.0f;
  for (int i = threadIdx.x; i < m; i += kThreads) part += __expf((sorted[i] - sorted[0]) * inv_t);
  const float total = block_sum(part, s_scratch);
  int c = m;  // size of the kept prefix
  if (top_p < 1.0f) c = first_cumsum_at(sorted, m, inv_t, top_p * total, false, ts, &s_found, &s_carry) + 1;
  // mass of the kept prefix
  part = 0.0f;
  for (int i = threadIdx.x; i < c; i += kThreads) part += __expf((sorted[i] - sorted[0]) * inv_t);
  const float kept = block_sum(part, s_scratch);
  const int pick = first_cumsum_at(sorted, c, inv_t, u * kept, true, ts, &s_found, &s_carry);
  if (threadIdx.x == 0) out[0] = ids[pick];
}
}  // namespace

void argmax_cuda(int* out, const float* x, int n, cudaStream_t st) {
  if (n <= 0) fail("argmax_cuda: empty input");
  argmax_kernel<<<1, kThreads, 0, st>>>(out, x, n);
  CUDA_CHECK_LAUNCH();
}

SampleScratch sample_scratch_create(int n) {
  if (n <= 0) fail("sample_scratch_create: n must be positive, got ", n);
  SampleScratch s;
  s.n = n;
  s.keys_in = DeviceBuffer(sizeof(float) * n);
  s.keys_out = DeviceBuffer(sizeof(float) * n);
  s.ids_in = DeviceBuffer(sizeof(int) * n);
  s.ids_out = DeviceBuffer(sizeof(int) * n);
  size_t temp = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp, s.keys_in.as<float>(), s.keys_out.as<float>(),
                                                       s.ids_in.as<int>(), s.ids_out.as<int>(), n));
  s.temp = DeviceBuffer(temp);
  return s;
}

void sample_cuda(int* out, const float* x, int n, float temperature, int top_k, float top_p, float u,
                 SampleScratch& s, cudaStream_t st) {
  if (n <= 0 || n > s.n) fail("sample_cuda: n ", n, " outside the scratch size ", s.n);
  if (!(temperature > 0.0f)) fail("sample_cuda: temperature must be > 0 (use argmax_cuda for greedy)");
  if (!(top_p > 0.0f)) fail("sample_cuda: top_p must be in (0, 1], got ", top_p);
  CUDA_CHECK(cudaMemcpyAsync(s.keys_in.ptr, x, sizeof(float) * n, cudaMemcpyDeviceToDevice, st));
  iota_kernel<<<ceil_div(n, 256), 256, 0, st>>>(s.ids_in.as<int>(), n);
  CUDA_CHECK_LAUNCH();
  size_t temp = s.temp.bytes;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(s.temp.ptr, temp, s.keys_in.as<float>(), s.keys_out.as<float>(),
                                                       s.ids_in.as<int>(), s.ids_out.as<int>(), n, 0,
                                                       int(sizeof(float) * 8), st));
  sample_sorted_kernel<<<1, kThreads, 0, st>>>(out, s.keys_out.as<float>(), s.ids_out.as<int>(), n, temperature,
                                                top_k, top_p, u);
  CUDA_CHECK_LAUNCH();
}

}  // namespace llm
