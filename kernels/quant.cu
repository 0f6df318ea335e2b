// Quantise / dequantise KV rows on the GPU (layout and contract in kernels/quant_cuda.h; CPU twin
// kernels/quant_cpu.cpp). One thread per (row, scale group): the group's min/max, its fp16 scale and min, and
// its code bytes, in the CPU's order. Quantisation runs once per prefill over the kept entries, so simplicity
// (bit-identical bytes) beats speed here; the hot path is the attention kernel that reads the result.
#include <cmath>

#include "kernels/quant_cuda.h"
#include "loader/ggml_quants.h"

namespace llm {

namespace {

__device__ __forceinline__ float load_in(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float load_in(const bf16* x, int64_t i) { return __bfloat162float(x[i]); }

// fp32 -> bf16 bits: bf16_from_bits (loader/ggml_quants.h, the host's f32_to_bf16), integer arithmetic. Not
// __float2bfloat16_rn: on an H100 (nvcc 13.0, sm_90a) its 16-bit result stored byte by byte below came out with a
// wrong low byte (0 or 1 by the sign; docs/performance.md "First GPU session"), which the emulator cannot show.
__device__ __forceinline__ void store_bytes(uint8_t* p, uint32_t v, int n) {
  for (int b = 0; b < n; ++b) p[b] = static_cast<uint8_t>(v >> (8 * b));
}

template <class T>
__global__ void quantize_rows_kernel(QuantRowsArgs a, const T* x) {
  const int gpr = a.n / a.group;  // groups per row
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= int64_t(a.n_rows) * gpr) return;
  const int r = static_cast<int>(t / gpr), gi = static_cast<int>(t - int64_t(r) * gpr);
  const int bits = a.bits[r];
  const int64_t src = a.src_row ? a.src_row[r] : r;
  const T* xr = x + src * a.x_stride + int64_t(gi) * a.group;
  uint8_t* row = a.dst + a.dst_off[r];
  if (bits == 16) {
    for (int i = 0; i < a.group; ++i) {
      const float v = load_in(xr, i);
      const int idx = gi * a.group + i;
      if (a.row16 == 4)
        store_bytes(row + size_t(idx) * 4, __float_as_uint(v), 4);
      else
        store_bytes(row + size_t(idx) * 2, bf16_from_bits(__float_as_uint(v)), 2);
    }
    return;
  }
  // quantize_row_cpu: lo/hi by std::min/std::max in index order (keeps the first of equal values, so -0 vs +0
  // resolves as on the CPU), scale and min rounded to fp16 first, codes against the rounded values.
  float lo = load_in(xr, 0), hi = lo;
  for (int i = 1; i < a.group; ++i) {
    const float v = load_in(xr, i);
    lo = v < lo ? v : lo;  // std::min(lo, v)
    hi = hi < v ? v : hi;  // std::max(hi, v)
  }
  const int qmax = (1 << bits) - 1, per_byte = 8 / bits;
  const __half h_min = __float2half_rn(lo), h_scale = __float2half_rn(__fdiv_rn(hi - lo, float(qmax)));
  const float mn = __half2float(h_min), sc = __half2float(h_scale);
  const float inv = sc > 0.0f ? __fdiv_rn(1.0f, sc) : 0.0f;
  uint8_t* g = row + size_t(gi) * (4 + a.group * bits / 8);
  store_bytes(g, __half_as_ushort(h_scale), 2);
  store_bytes(g + 2, __half_as_ushort(h_min), 2);
  uint8_t* codes = g + 4;
  for (int b0 = 0; b0 < a.group; b0 += per_byte) {  // one output byte at a time: no read-modify-write races
    uint32_t byte = 0;
    for (int k = 0; k < per_byte; ++k) {
      int c = __float2int_rn(__fmul_rn(__fsub_rn(load_in(xr, b0 + k), mn), inv));  // lrint: nearest, ties even
      c = min(max(c, 0), qmax);
      byte |= uint32_t(c) << (k * bits);
    }
    codes[b0 / per_byte] = static_cast<uint8_t>(byte);
  }
}

__global__ void dequantize_rows_kernel(float* out, const uint8_t* src, const uint64_t* src_off, const uint8_t* bits,
                                       int n_rows, int n, int group, int row16) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= int64_t(n_rows) * n) return;
  const int r = static_cast<int>(t / n), i = static_cast<int>(t - int64_t(r) * n);
  float v;
  quant_load_values<1>(&v, src + src_off[r], i, bits[r], group, row16);
  out[t] = v;
}

// One warp a row, E = hd / 32 consecutive values a lane: the stages h < E inside a lane, the rest across lanes by
// shuffles, in the CPU twin's order (h = 1, 2, 4, ...: each value is a + b or a - b of the same two fp32 operands),
// so an fp32 row rotates to the same bits; the scale comes from the host (hadamard_rotate_cpu's 1 / sqrt(n)).
template <int E>
__global__ void hadamard_rows_kernel(bf16* x, const int* pos, int n, int blocks, int64_t block_stride,
                                     int64_t row_stride, float scale) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= int64_t(n) * blocks) return;  // (a whole warp leaves together: the shuffles below see full warps)
  const int lane = threadIdx.x % 32, i = static_cast<int>(row % n), b = static_cast<int>(row / n);
  bf16* r = x + b * block_stride + int64_t(pos ? pos[i] : i) * row_stride + lane * E;
  float v[E];
#pragma unroll
  for (int e = 0; e < E; ++e) v[e] = __bfloat162float(r[e]);
#pragma unroll
  for (int h = 1; h < E; h *= 2)
#pragma unroll
    for (int e = 0; e < E; ++e)
      if (!(e & h)) {
        const float a = v[e], c = v[e + h];
        v[e] = a + c, v[e + h] = a - c;
      }
  for (int h = E; h < 32 * E; h *= 2) {
    const int m = h / E;  // the partner lane holds value j ^ h at the same e
    const bool low = !(lane & m);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const float o = __shfl_xor_sync(0xffffffffu, v[e], m);
      v[e] = low ? v[e] + o : o - v[e];
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) r[e] = __float2bfloat16_rn(v[e] * scale);
}

template <class T>
void launch_quantize(const QuantRowsArgs& a, const T* x, cudaStream_t st) {
  quant_check_cuda("quantize_rows_cuda", a.n, a.group, a.row16);
  if (a.n_rows <= 0) return;
  const int64_t threads = int64_t(a.n_rows) * (a.n / a.group);
  quantize_rows_kernel<T><<<ceil_div(threads, 128), 128, 0, st>>>(a, x);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void quant_check_cuda(const char* who, int n, int group, int row16) {
  if (group <= 0 || group % 4 != 0 || n <= 0 || n % group != 0)
    fail(who, ": group ", group, " must be a positive multiple of 4 dividing head_dim ", n);
  if (row16 != 2 && row16 != 4) fail(who, ": row16 ", row16, " must be 2 (bf16) or 4 (fp32) bytes a value");
}

void quantize_rows_cuda(const QuantRowsArgs& a, const float* x, cudaStream_t st) { launch_quantize(a, x, st); }
void quantize_rows_cuda(const QuantRowsArgs& a, const bf16* x, cudaStream_t st) { launch_quantize(a, x, st); }

void dequantize_rows_cuda(float* out, const uint8_t* src, const uint64_t* src_off, const uint8_t* bits, int n_rows,
                          int n, int group, int row16, cudaStream_t st) {
  quant_check_cuda("dequantize_rows_cuda", n, group, row16);
  if (n_rows <= 0) return;
  dequantize_rows_kernel<<<ceil_div(int64_t(n_rows) * n, 256), 256, 0, st>>>(out, src, src_off, bits, n_rows, n,
                                                                             group, row16);
  CUDA_CHECK_LAUNCH();
}

void hadamard_rows_cuda(bf16* x, const int* pos, int n, int blocks, int64_t block_stride, int64_t row_stride, int hd,
                        cudaStream_t st) {
  if (hd < 64 || hd > 256 || (hd & (hd - 1)) != 0)
    fail("hadamard_rows_cuda: head_dim ", hd, " unsupported (64, 128 or 256)");
  if (n <= 0 || blocks <= 0) return;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));  // hadamard_rotate_cpu's
  const int rows_per_block = 4;
  const unsigned grid = static_cast<unsigned>(ceil_div(int64_t(n) * blocks, rows_per_block));
  if (hd == 64)
    hadamard_rows_kernel<2><<<grid, 32 * rows_per_block, 0, st>>>(x, pos, n, blocks, block_stride, row_stride, scale);
  else if (hd == 128)
    hadamard_rows_kernel<4><<<grid, 32 * rows_per_block, 0, st>>>(x, pos, n, blocks, block_stride, row_stride, scale);
  else
    hadamard_rows_kernel<8><<<grid, 32 * rows_per_block, 0, st>>>(x, pos, n, blocks, block_stride, row_stride, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace llm
